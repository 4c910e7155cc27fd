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
