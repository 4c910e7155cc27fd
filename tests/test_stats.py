"""The π-weighted covariance of the entropy mechanism (Cui et al. §4, spec §7) against hand values and
the exact entropy change of a softmax."""
import math

import pytest
import torch

from rlvr_cli.stats import entropy_change_first_order, pg_entropy_change, policy_covariance


def _entropy(z):
    return -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1)


def test_policy_covariance_by_hand():
    # π = (0.5, 0.5) at z = 0: log π = −log 2 for both actions, so the covariance with anything is 0
    assert policy_covariance(torch.zeros(2), torch.tensor([1.0, -1.0])).item() == pytest.approx(0.0, abs=1e-7)
    # π = (0.75, 0.25) (z = [log 3, 0]): v = log π gives the variance of log π under π:
    # E[(log π)^2] − E[log π]^2 = 0.75·0.25·(log 3)^2
    z = torch.tensor([math.log(3.0), 0.0])
    logp = torch.log_softmax(z, -1)
    assert policy_covariance(z, logp).item() == pytest.approx(0.1875 * math.log(3.0) ** 2, rel=1e-5)


def test_first_order_change_matches_the_exact_entropy_change():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 50, generator=g) * 2  # [states, V]
    dz = torch.randn(16, 50, generator=g)
    for eta in (1e-2, 1e-3):
        exact = _entropy(z + eta * dz) - _entropy(z)
        first = entropy_change_first_order(z, eta * dz)
        assert (exact - first).abs().max() < 5 * eta**2 * dz.abs().max() ** 2  # O(η²) remainder
        assert torch.corrcoef(torch.stack([exact, first]))[0, 1] > 0.999


def test_policy_gradient_kinds():
    # natural PG: a positive advantage on the most likely action lowers entropy (positive covariance)
    z = torch.tensor([2.0, 0.0, 0.0])
    adv = torch.tensor([1.0, -0.5, -0.5])
    nat = pg_entropy_change(z, adv, 0.1, "natural")
    tab = pg_entropy_change(z, adv, 0.1, "tabular")
    assert nat < 0 and tab < 0
    assert tab.item() == pytest.approx(entropy_change_first_order(z, 0.1 * torch.softmax(z, -1) * adv).item())
    # the opposite sign (a rare action rewarded) raises it
    assert pg_entropy_change(z, -adv, 0.1, "natural") > 0
    with pytest.raises(ValueError, match="natural, tabular"):
        pg_entropy_change(z, adv, 0.1, "mirror")


def test_entropy_profile_by_hand():
    """Quantiles over valid tokens only (padding ignored), and the share of tokens whose top-1 >= 0.8."""
    from rlvr_cli.rollout.logprobs import top1_prob
    from rlvr_cli.stats import entropy_profile

    entropy = torch.tensor([[0.0, 0.1, 0.2, 9.0], [0.3, 0.4, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.85, 0.15], [0.1, 0.9], [0.7, 0.3], [0.6, 0.4],
                                     [1.0, 0.0], [1.0, 0.0]])).view(2, 4, 2)
    top1 = top1_prob(logits)
    assert torch.allclose(top1[0, :3], torch.tensor([0.9, 0.5, 0.85]))
    p = entropy_profile(entropy, mask, top1)
    # valid: 0, .1, .2, .3, .4 -> p50 .2, p80 at position 3.2: .3 + .2 * .1, p95 at 3.8: .38
    assert p["actor/entropy_p50"] == pytest.approx(0.2)
    assert p["actor/entropy_p80"] == pytest.approx(0.32)
    assert p["actor/entropy_p95"] == pytest.approx(0.38)
    assert p["actor/top1_ge_0.8_frac"] == pytest.approx(2 / 5)  # 0.9 and 0.85 of the 5 valid tokens
    assert "actor/top1_ge_0.8_frac" not in entropy_profile(entropy, mask)
    assert entropy_profile(entropy, torch.zeros_like(mask)) == {}
