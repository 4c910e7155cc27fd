"""Rollout–trainer mismatch metrics and truncated importance weights, against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from rlvr_cli.rollout.correction import importance_weights, mismatch_metrics, weight_metrics

# two responses, three tokens; the second response has one padding token
TRAIN = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, 0.0]])
ROLL = torch.tensor([[-1.0, -2.0 - math.log(3.0), -0.5 + math.log(2.0)], [-0.1 + 1.0, -3.0, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# d = train - rollout = [[0, ln 3, -ln 2], [-1, 0, pad]];  r = [[1, 3, 0.5], [e^-1, 1, -]]


def test_token_truncate_caps_each_ratio():
    w = importance_weights(TRAIN, ROLL, MASK, "token_truncate", 2.0)
    expected = torch.tensor([[1.0, 2.0, 0.5], [math.exp(-1), 1.0, 0.0]])
    assert torch.allclose(w, expected, atol=1e-6)


def test_token_mask_drops_a_token_over_the_cap_and_keeps_the_others_ratio():
    w = importance_weights(TRAIN, ROLL, MASK, "token_mask", 2.0)
    expected = torch.tensor([[1.0, 0.0, 0.5], [math.exp(-1), 1.0, 0.0]])
    assert torch.allclose(w, expected, atol=1e-6)


def test_sequence_modes_use_the_product_of_ratios_over_the_response():
    # R_1 = 1 * 3 * 0.5 = 1.5 (under the cap 2); R_2 = e^-1 * 1 = 0.368
    w = importance_weights(TRAIN, ROLL, MASK, "sequence_truncate", 2.0)
    assert torch.allclose(w, torch.tensor([[1.5, 1.5, 1.5], [math.exp(-1), math.exp(-1), 0.0]]), atol=1e-6)
    w = importance_weights(TRAIN, ROLL, MASK, "sequence_mask", 1.2)  # R_1 = 1.5 > 1.2: whole response dropped
    assert torch.allclose(w, torch.tensor([[0.0, 0.0, 0.0], [math.exp(-1), math.exp(-1), 0.0]]), atol=1e-6)
    w = importance_weights(TRAIN, ROLL, MASK, "sequence_truncate", 1.2)
    assert torch.allclose(w[0], torch.full((3,), 1.2), atol=1e-6)


def test_a_long_response_far_off_does_not_overflow():
    t = torch.zeros(1, 4000)
    r = torch.full((1, 4000), -1.0)  # log R = 4000
    for mode in ("sequence_truncate", "sequence_mask", "token_truncate"):
        w = importance_weights(t, r, torch.ones(1, 4000), mode, 2.0)
        assert torch.isfinite(w).all()
    assert importance_weights(t, r, torch.ones(1, 4000), "sequence_mask", 2.0).sum() == 0


def test_off_is_the_mask_and_a_bad_mode_is_named():
    assert torch.equal(importance_weights(TRAIN, ROLL, MASK, "off", 2.0), MASK.float())
    with pytest.raises(ValueError, match="token_truncate"):
        importance_weights(TRAIN, ROLL, MASK, "tis", 2.0)


def test_mismatch_metrics_by_hand():
    m = mismatch_metrics(TRAIN, ROLL, MASK)
    d = [0.0, math.log(3), -math.log(2), -1.0, 0.0]
    assert m["rollout/logprob_abs_diff_mean"] == pytest.approx(sum(abs(x) for x in d) / 5, abs=1e-6)
    assert m["rollout/logprob_abs_diff_max"] == pytest.approx(math.log(3), abs=1e-6)
    k3 = sum(math.exp(x) - 1 - x for x in d) / 5
    assert m["rollout/kl_rollout_train"] == pytest.approx(k3, abs=1e-6)
    same = mismatch_metrics(TRAIN, TRAIN, MASK)
    assert same["rollout/kl_rollout_train"] == 0.0 and same["rollout/logprob_abs_diff_max"] == 0.0


def test_weight_metrics_count_the_capped_tokens():
    w = importance_weights(TRAIN, ROLL, MASK, "token_truncate", 2.0)
    m = weight_metrics(w, TRAIN, ROLL, MASK, "token_truncate", 2.0)
    assert m["rollout/is_capped_frac"] == pytest.approx(1 / 5)
    assert m["rollout/is_weight_mean"] == pytest.approx((1 + 2 + 0.5 + math.exp(-1) + 1) / 5, abs=1e-6)
