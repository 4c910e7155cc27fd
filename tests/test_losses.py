import math

import pytest
import torch

from rlvr_cli.losses import AGG_MODES, ClipSpec, agg_loss, clipped_token_loss, kl_penalty


def _lp(ratio):
    return torch.log(torch.tensor(ratio))


def test_clip_higher_bounds_positive_advantage():
    old = torch.zeros(1, 3)
    lp = _lp([[1.5, 1.1, 0.5]])
    adv = torch.ones(1, 3)
    loss, info = clipped_token_loss(lp, old, adv, ClipSpec(0.2, 0.28, 3.0))
    # A>0: −A·min(r, 1.28) (upper bound only); r=0.5 keeps the unclipped branch
    assert torch.allclose(loss, torch.tensor([[-1.28, -1.1, -0.5]]), atol=1e-6)
    assert info["clipped"].tolist() == [[True, False, False]]


def test_dual_clip_caps_negative_advantage_loss():
    old = torch.zeros(1, 3)
    lp = _lp([[5.0, 0.5, 1.0]])
    adv = -torch.ones(1, 3)
    loss, info = clipped_token_loss(lp, old, adv, ClipSpec(0.2, 0.2, 3.0))
    # r=5: max(5, 1.2)=5 then min(5, c=3) -> 3 (dual clip); r=0.5: max(0.5, 0.8)=0.8
    assert torch.allclose(loss, torch.tensor([[3.0, 0.8, 1.0]]), atol=1e-6)
    assert info["clipped_lower"].tolist() == [[True, False, False]]
    no_dual, _ = clipped_token_loss(lp, old, adv, ClipSpec(0.2, 0.2, None))
    assert no_dual[0, 0] == pytest.approx(5.0)


def test_dual_clip_gradient_is_zero_beyond_c():
    lp = _lp([[5.0]]).requires_grad_()
    loss, _ = clipped_token_loss(lp, torch.zeros(1, 1), -torch.ones(1, 1), ClipSpec())
    loss.sum().backward()
    assert lp.grad.item() == 0.0


def test_unclipped_objective_for_kl_cov():
    loss, _ = clipped_token_loss(_lp([[2.0]]), torch.zeros(1, 1), torch.ones(1, 1), ClipSpec(clip=False))
    assert loss.item() == pytest.approx(-2.0)


def test_log_ratio_clamp_prevents_overflow():
    loss, _ = clipped_token_loss(torch.tensor([[100.0]]), torch.zeros(1, 1), torch.ones(1, 1), ClipSpec(clip=False))
    assert loss.item() == pytest.approx(-math.exp(20.0), rel=1e-5)


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, float("nan")]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("token-mean", (1 + 2 + 3 + 4) / 4),
        ("seq-mean-token-sum", (6 + 4) / 2),
        ("seq-mean-token-mean", (2 + 4) / 2),
        ("seq-mean-token-sum-norm", (6 + 4) / 3),  # / T, no division by sequences (verl)
    ],
)
def test_agg_modes_match_hand_values_and_ignore_padding_nan(mode, expected):
    assert agg_loss(LOSS, MASK, mode).item() == pytest.approx(expected)


def test_sum_norm_never_divides_by_sequences_and_the_per_seq_variant_is_named():
    # verl (spec §4, §12.10): Σ ℓ / C even when the loop passes the mini-batch's sequence count
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm", num_seqs=2, scale_factor=5).item() == pytest.approx(10 / 5)
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm-by-seqs", num_seqs=2, scale_factor=5).item() == pytest.approx(1.0)
    assert agg_loss(LOSS, MASK, "seq-mean-token-sum-norm-by-seqs", scale_factor=5).item() == pytest.approx(1.0)


def test_global_normaliser_makes_micro_batches_add_up():
    full = agg_loss(LOSS, MASK, "token-mean")
    parts = sum(agg_loss(LOSS[i : i + 1], MASK[i : i + 1], "token-mean", num_tokens=4) for i in range(2))
    assert parts.item() == pytest.approx(full.item())
    full = agg_loss(LOSS, MASK, "seq-mean-token-mean")
    parts = sum(agg_loss(LOSS[i : i + 1], MASK[i : i + 1], "seq-mean-token-mean", num_seqs=2) for i in range(2))
    assert parts.item() == pytest.approx(full.item())


def test_all_masked_gives_connected_zero_not_nan():
    x = torch.ones(2, 3, requires_grad=True)
    for mode in AGG_MODES:
        out = agg_loss(x, torch.zeros(2, 3), mode)
        assert out.item() == 0.0
        out.backward()


def test_unknown_agg_mode_lists_valid():
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(LOSS, MASK, "mean")


def test_kl_estimators():
    lp, ref = torch.tensor([0.0]), torch.tensor([math.log(2.0)])  # d = −log 2
    d = -math.log(2.0)
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(lp, ref, "abs").item() == pytest.approx(-d)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(2 - math.log(2) - 1)


def test_k3_plus_has_k3_value_and_k2_gradient():
    lp = torch.tensor([0.3], requires_grad=True)
    ref = torch.tensor([0.0])
    out = kl_penalty(lp, ref, "k3+")
    assert out.item() == pytest.approx(kl_penalty(lp, ref, "k3").item())
    out.backward()
    assert lp.grad.item() == pytest.approx(0.3)  # d(½d²)/dlp = d


def test_unknown_kl_type():
    with pytest.raises(ValueError, match="low_var_kl"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k9")
