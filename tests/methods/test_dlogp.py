import math

import pytest
import torch

from rlvr_cli.losses import ClipSpec, clipped_token_loss
from rlvr_cli.methods.dlogp import dlogp_weights
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch


def test_weights_by_hand():
    old = torch.tensor([[0.0, math.log(0.5), -float("inf"), 1e-6, float("nan")]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    # 1 + 0.2·(1 − p): p=1 -> 1; p=0.5 -> 1.1; p -> 0 -> 1.2; lp > 0 clamped to 0 -> 1; padding -> 0
    assert dlogp_weights(old, mask, 0.2)[0].tolist() == pytest.approx([1.0, 1.1, 1.2, 1.0, 0.0])


def test_weighting_the_loss_equals_weighting_the_advantage():
    torch.manual_seed(0)
    lp, old = -torch.rand(3, 5) * 3, -torch.rand(3, 5) * 3
    adv = torch.tensor([[2.0], [-1.0], [-0.3]]).expand(3, 5)
    w = dlogp_weights(old, torch.ones(3, 5), 0.2)
    spec = ClipSpec(0.2, 0.28, 3.0)  # DAPO clip-higher + dual clip, as the paper's base
    assert torch.allclose(clipped_token_loss(lp, old, w * adv, spec)[0], w * clipped_token_loss(lp, old, adv, spec)[0])


def test_yaml_method():
    method = build_from_yaml("dlogp")
    b = synthetic_batch()
    m = method.prepare(b, ctx())
    out = method.loss(policy_batch(b, rows=[0, 1]))
    valid = b.response_mask[:2].bool()
    assert out.token_weights.shape == (2, 6) and torch.isfinite(out.token_weights).all()
    assert ((out.token_weights[valid] >= 1) & (out.token_weights[valid] <= 1.2)).all()
    expected = 1 + 0.2 * (1 - b.old_logprobs[:2][valid].exp())
    assert torch.allclose(out.token_weights[valid], expected)
    assert 1.0 <= m["weight_mean"] <= 1.2 and m["ppl"] > 1 and m["old_logprob_p10"] <= m["old_logprob_p90"]


def test_all_tokens_masked():
    method = build_from_yaml("dlogp")
    b = synthetic_batch((0,))
    assert method.prepare(b, ctx()) == {}
    assert method.loss(policy_batch(b)).token_weights.sum() == 0
