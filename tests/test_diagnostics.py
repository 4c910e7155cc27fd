"""rlvr_cli/diagnostics.py: the active-token fraction and the gradient ratio / cosine of a method's term,
checked by hand on tiny tensors (the loss is built by losses.micro_batch_loss, as the loop builds it)."""
from __future__ import annotations

import math

import pytest
import torch

from rlvr_cli.diagnostics import (
    active_fraction, active_tokens, clip_changed, gradient_diagnostic, grad_ratio_cos, method_gradients,
)
from rlvr_cli.losses import ClipSpec, agg_loss, kl_penalty, micro_batch_loss
from rlvr_cli.methods.dlogp import dlogp_weights
from rlvr_cli.trainer.actor import Totals
from rlvr_cli.types import MethodOutput

ALGO = ClipSpec(0.2, 0.28, 3.0)


def _two_tokens(theta):
    """One response of two tokens whose log-probs are log σ(θ_t): dlp_t/dθ_t = 1 − σ(θ_t)."""
    lp = torch.nn.functional.logsigmoid(theta)[None]  # [1, 2]
    return lp, lp.detach(), torch.ones(1, 2, dtype=theta.dtype)  # logprobs, old (on-policy), mask


def test_grad_ratio_cos_edge_cases_and_parallel_vectors():
    z = [torch.zeros(3), torch.zeros(2)]
    g = [torch.tensor([1.0, 2.0, 2.0]), torch.tensor([0.0, 0.0])]  # ‖g‖ = 3
    assert grad_ratio_cos(z, g) == (0.0, 0.0)  # g_m exactly 0: inert
    assert grad_ratio_cos(g, z) == (math.inf, 0.0)  # no policy gradient: undefined ratio, cos 0
    assert grad_ratio_cos(z, z) == (0.0, 0.0)
    ratio, cos = grad_ratio_cos([-0.5 * t for t in g], g)  # over the concatenation of the parameters
    assert ratio == pytest.approx(0.5) and cos == pytest.approx(-1.0)
    ratio, cos = grad_ratio_cos([torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.0, 2.0])], g)  # ⟂, ‖·‖ = 3
    assert ratio == pytest.approx(1.0) and cos == pytest.approx(0.0, abs=1e-12)


def test_two_token_weight_method_by_hand():
    """Δlog p weights w_t = 1 + α(1 − p_t) on two tokens, token-mean over 2, r = 1 (on-policy):
    ℓ_t = −A_t·r_t, so g_pg,t = ∂L_without/∂θ_t = −A_t(1 − p_t)/2 and the method's term
    D = Σ (w_t − 1)ℓ_t / 2 has g_m,t = −α(1 − p_t)²·A_t/2 (w is detached)."""
    alpha, adv = 0.5, torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    theta = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    lp, old, mask = _two_tokens(theta)
    totals = Totals(pg_tokens=2.0, pg_seqs=1.0, tokens=2.0, seqs=1.0)
    out = MethodOutput(token_weights=dlogp_weights(old, mask, alpha))
    with_m = micro_batch_loss(lp, old, adv, mask, out, ALGO, totals).total
    without = micro_batch_loss(lp, old, adv, mask, MethodOutput(), ALGO, totals).total
    g_m, g_pg = method_gradients(with_m, without, [theta])
    p = torch.sigmoid(theta.detach())
    a = adv[0]
    hand_pg = -a * (1 - p) / 2
    hand_m = -alpha * (1 - p) ** 2 * a / 2
    assert torch.allclose(g_pg[0], hand_pg, rtol=1e-12) and torch.allclose(g_m[0], hand_m, rtol=1e-12)
    ratio, cos = grad_ratio_cos(g_m, g_pg)
    assert ratio == pytest.approx(float(hand_m.norm() / hand_pg.norm()), rel=1e-12)
    assert cos == pytest.approx(float(hand_m @ hand_pg / (hand_m.norm() * hand_pg.norm())), rel=1e-12)
    # the numbers: p = (0.8808, 0.2689); g_pg = (−0.0596, 0.1828); g_m = (−0.00355, 0.0668)
    assert ratio == pytest.approx(0.34801, abs=1e-5) and cos == pytest.approx(0.96584, abs=1e-5)
    assert theta.grad is None  # autograd.grad never writes .grad


def test_no_method_is_exactly_zero_with_a_kl_reference_and_the_real_backward_is_unchanged():
    theta = torch.tensor([0.3, -1.2], requires_grad=True)
    old, adv, mask = torch.tensor([[-0.9, -1.5]]), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2)
    totals = Totals(2.0, 1.0, 2.0, 1.0)

    def loss_of(out):
        lp = torch.nn.functional.logsigmoid(theta)[None]
        reference = 0.1 * agg_loss(kl_penalty(lp, old - 0.3), mask)  # the same term with and without the method
        return micro_batch_loss(lp, old, adv, mask, out, ALGO, totals, reference=reference).total

    expected = torch.autograd.grad(loss_of(MethodOutput()), theta)[0]
    loss = loss_of(MethodOutput())
    assert gradient_diagnostic(loss, loss_of(MethodOutput()), [theta]) == {"method/grad_ratio": 0.0, "method/grad_cos": 0.0}
    loss.backward()  # the graph is kept for the real backward, whose gradient is untouched
    assert torch.equal(theta.grad, expected)


def test_extra_loss_counts_with_its_share_of_the_responses():
    theta = torch.tensor([0.5, 0.5], requires_grad=True)
    lp, old, mask = _two_tokens(theta)
    extra = (theta ** 2).sum()  # ∇ = 2θ = (1, 1), times the share 1/4 (1 response of 4 in the mini-batch)
    totals = Totals(8.0, 4.0, 8.0, 4.0)
    res = micro_batch_loss(lp, old, torch.zeros(1, 2), mask, MethodOutput(extra_loss=extra), ALGO, totals)
    assert float(res.extra.detach()) == pytest.approx(0.5 * 0.25)
    g_m, g_pg = method_gradients(res.total, micro_batch_loss(lp, old, torch.zeros(1, 2), mask, MethodOutput(), ALGO, totals).total, [theta])
    assert torch.allclose(g_m[0], torch.tensor([0.25, 0.25])) and torch.equal(g_pg[0], torch.zeros(2))
    assert grad_ratio_cos(g_m, g_pg) == (math.inf, 0.0)  # A = 0: the method is the whole update


def test_active_tokens_from_each_field():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])  # 5 valid tokens
    assert active_fraction(active_tokens(MethodOutput(), mask), mask) == 0.0
    w = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.5, 1.0, 0.0, 0.0]])  # padding's weight 0 is not counted
    assert active_fraction(active_tokens(MethodOutput(token_weights=w), mask), mask) == pytest.approx(2 / 5)
    tl = torch.tensor([[0.0, 0.0, -0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert active_fraction(active_tokens(MethodOutput(token_loss=tl), mask), mask) == pytest.approx(1 / 5)
    keep = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # a loss mask dropping 2 tokens
    assert active_fraction(active_tokens(MethodOutput(), mask, keep), mask) == pytest.approx(2 / 5)
    named = torch.tensor([[True, False, False, True], [False, False, False, False]])  # padding ignored
    assert active_fraction(active_tokens(MethodOutput(active=named), mask), mask) == pytest.approx(1 / 5)
    both = active_tokens(MethodOutput(token_weights=w, token_loss=tl, active=named), mask, keep)
    assert both.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert active_fraction(both, torch.zeros_like(mask)) == 0.0


def test_clip_overrides_are_active_where_they_change_the_clipped_loss():
    old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[1.5, 1.1, 0.5, 5.0]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    # clip_cov's r ∈ [0, 2], no dual clip vs the algo's [0.8, 1.28], c = 3: r = 1.5 (A > 0) is clipped by
    # the algo only; r = 0.5 (A < 0) too; r = 5 (A < 0): loss 2 (clamp at 2) vs 3 (dual clip): differ
    changed = clip_changed(lp, old, adv, ClipSpec(1.0, 1.0, None), ALGO)
    assert changed.tolist() == [[True, False, True, True]]
    assert clip_changed(lp, old, adv, ALGO, ClipSpec(0.2, 0.28, 3.0)) is None  # equal specs
    assert clip_changed(torch.zeros(1, 4), old, adv, ClipSpec(clip=False), ALGO).tolist() == [[False] * 4]  # r = 1


def test_sliced_dot_products_equal_the_plain_ones(monkeypatch):
    from rlvr_cli import diagnostics

    g = torch.Generator().manual_seed(0)
    g_m = [torch.randn(5, 3, generator=g).bfloat16(), torch.randn(7, generator=g)]
    g_pg = [torch.randn(5, 3, generator=g).bfloat16(), torch.randn(7, generator=g)]
    flat = lambda gs: torch.cat([t.double().reshape(-1) for t in gs])  # noqa: E731
    a, b = flat(g_m), flat(g_pg)
    monkeypatch.setattr(diagnostics, "CHUNK", 4)  # several slices per tensor
    ratio, cos = grad_ratio_cos(g_m, g_pg)
    assert ratio == pytest.approx(float(a.norm() / b.norm()), rel=1e-6)
    assert cos == pytest.approx(float(a @ b / (a.norm() * b.norm())), rel=1e-6)
