import math

import pytest
import torch

from rlvr_cli.methods.rsi_s import KEEP_KEY, relative_surprisal, rsi_bounds, rsi_keep_mask
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch

NAN = float("nan")


def test_rsi_by_hand_limits_and_padding():
    lp = torch.tensor([[math.log(0.5), 0.0, -2.0, math.log(0.9), NAN]])
    h = torch.tensor([[math.log(2.0), 0.3, 0.0, 0.0, NAN]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    rsi = relative_surprisal(lp, h, mask)
    # ln2/ln2 = 1; p = 1 -> S = 0 -> 0; tail sample at H = 0: 2/1e-6 = 2e6; argmax at H -> 0: 0.105/1e-6 (huge)
    assert rsi[0, :3].tolist() == pytest.approx([1.0, 0.0, 2e6])
    assert rsi[0, 3] > 1e4 and rsi[0, 4] == 0.0
    keep = rsi_keep_mask(rsi, mask, 0.25, 4.0)
    assert keep.tolist() == [[True, False, False, False, False]]
    # zero entropy and p = 1 exactly: RSI 0 -> dropped
    zero = relative_surprisal(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1))
    assert zero.item() == 0.0 and not rsi_keep_mask(zero, torch.ones(1, 1), 0.25, 4.0).any()


def test_closed_band_and_quantile_bounds():
    rsi = torch.tensor([[0.25, 4.0, 0.2, 5.0]])
    assert rsi_keep_mask(rsi, torch.ones(1, 4), 0.25, 4.0).tolist() == [[True, True, False, False]]
    # valid values 0..9: q10 at 0.9, q90 at 8.1 (linear interpolation)
    values = torch.arange(10.0)[None]
    assert rsi_bounds(values, torch.ones(1, 10), 0.1, 0.9) == pytest.approx((0.9, 8.1))
    assert rsi_bounds(values, torch.zeros(1, 10), 0.1, 0.9) == (0.0, 0.0)


def test_yaml_method_kept_normaliser_is_the_loss_mask():
    method = build_from_yaml("rsi_s")
    ent = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    lp = torch.tensor([[-1.0, -0.1, -5.0], [-2.0, 0.0, -0.5]])  # RSI [1, 0.1, 5], [2, 0, 0.5]
    b = synthetic_batch((3, 2), old_logprobs=lp, entropy=ent)
    m = method.prepare(b, ctx())
    assert b.method["loss_mask"].tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert m["keep_frac"] == pytest.approx(2 / 5) and m["drop_low_frac"] == pytest.approx(2 / 5)
    assert m["drop_high_frac"] == pytest.approx(1 / 5) and m["r_lo"] == 0.25 and m["empty_seq_frac"] == 0.0
    assert {"rsi_p10", "rsi_p50", "rsi_p90", "H_kept_mean", "S_dropped_mean"} <= set(m)
    out = method.loss(policy_batch(b))
    assert out.token_weights is None and out.token_loss is None  # the loop aggregates over the loss mask


def test_normalize_by_all_gives_token_weights_and_quantile_mode():
    method = build_from_yaml("rsi_s", normalize_by="all", bounds_mode="quantile", q_lo=0.25, q_hi=0.75)
    b = synthetic_batch((4, 4), seed=3)
    m = method.prepare(b, ctx())
    assert "loss_mask" not in b.method
    out = method.loss(policy_batch(b))
    assert out.token_weights.shape == (2, 4) and torch.equal(out.token_weights, b.method[KEEP_KEY])
    # quantile band over 8 tokens keeps about the middle half, closed ends
    assert 3 <= int(out.token_weights.sum()) <= 5 and m["r_lo"] < m["r_hi"]


def test_source_current_uses_the_current_forward():
    method = build_from_yaml("rsi_s", normalize_by="all", source="current")
    assert method.needs.update == ("entropy",)
    b = synthetic_batch((2,))
    method.prepare(b, ctx())
    lp = torch.tensor([[-1.0, -100.0]])
    out = method.loss(policy_batch(b, logprobs=lp, token={"entropy": torch.ones(1, 2)}))
    assert out.token_weights.tolist() == [[1.0, 0.0]]


def test_bad_combination_fails_with_a_fix():
    with pytest.raises(ValueError, match="normalize_by=all"):
        build_from_yaml("rsi_s", source="current")


def test_all_tokens_masked():
    method = build_from_yaml("rsi_s")
    b = synthetic_batch((0, 0))
    m = method.prepare(b, ctx())
    assert b.method["loss_mask"].sum() == 0 and m["keep_frac"] == 0.0
