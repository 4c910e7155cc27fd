import pytest
import torch

from rlvr_cli.methods.entropy_bonus import entropy_bonus_token_loss
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch


def test_token_loss_by_hand_and_nan_padding():
    h = torch.tensor([[2.0, 0.5, float("nan")]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    out = entropy_bonus_token_loss(h, mask, 0.01)
    assert out[0].tolist() == pytest.approx([-0.02, -0.005, 0.0])  # −coef·H, padding 0
    out.sum().backward()
    assert h.grad[0].tolist() == pytest.approx([-0.01, -0.01, 0.0])  # maximises entropy; no NaN


def test_yaml_method_asks_for_entropy_with_grad():
    method = build_from_yaml("entropy_bonus")
    assert method.needs.update == ("entropy",) and method.needs.update_grad == ("entropy",)
    b = synthetic_batch()
    assert method.prepare(b, ctx()) == {"coef": 1e-3}
    h = torch.where(b.response_mask.bool(), b.token["entropy"], 0.0).requires_grad_()
    out = method.loss(policy_batch(b, token={"entropy": h}))
    assert out.token_loss.shape == h.shape and torch.allclose(out.token_loss, -1e-3 * h.detach())
    assert out.token_weights is None and out.extra_loss is None and out.metrics["entropy_current"] > 0


def test_scheduled_coefficient():
    method = build_from_yaml("entropy_bonus", coef=0.01, schedule={"kind": "linear", "hold_frac": 0.0})
    # u = 5/10: 0.01·0.5
    assert method.prepare(synthetic_batch(), ctx(step=5, total=10))["coef"] == pytest.approx(0.005)
    assert method.prepare(synthetic_batch(), ctx(step=10, total=10))["coef"] == 0.0
    b = synthetic_batch((0, 0))
    out = method.loss(policy_batch(b, token={"entropy": torch.zeros(2, 1, requires_grad=True)}))
    assert out.token_loss.abs().sum() == 0 and out.metrics["entropy_current"] == 0.0
