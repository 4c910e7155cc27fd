"""Does each method act? ``method/active_frac`` and ``method/grad_ratio`` (rlvr_cli/diagnostics.py) on a
tiny differentiable policy: a logits tensor Z [n, T, V] is the only parameter, and the micro-batch loss
is built with and without the method exactly as the loop builds it (losses.micro_batch_loss)."""
from __future__ import annotations

import pytest
import torch

from rlvr_cli.diagnostics import active_fraction, active_tokens, clip_changed, grad_ratio_cos, method_gradients
from rlvr_cli.losses import ClipSpec, micro_batch_loss
from rlvr_cli.methods.siren import ENTROPY, NUCLEUS_SIZE, topp_entropy
from rlvr_cli.trainer.actor import Totals
from rlvr_cli.types import MethodOutput, PolicyBatch
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch

ALGO = ClipSpec(0.2, 0.28, 3.0)
LENGTHS = (6, 5, 4, 3)
V = 8


def _policy(seed: int = 0):
    """Logits Z (the parameter), sampled tokens, and the statistics the methods read, all with grad."""
    g = torch.Generator().manual_seed(seed)
    n, t = len(LENGTHS), max(LENGTHS)
    # rows from flat to peaked, so entropies, surprisals and covariances spread
    z = (torch.randn(n, t, V, generator=g) * torch.linspace(0.5, 4.0, t)[None, :, None]).requires_grad_()
    y = torch.randint(V, (n, t), generator=g)
    logp = torch.log_softmax(z, -1)
    lp = logp.gather(-1, y[..., None])[..., 0]  # [n, T]
    entropy = -(logp.exp() * logp).sum(-1)  # [n, T]
    topp = topp_entropy(z.reshape(-1, V), 0.8, 10000).reshape(n, t)
    return z, lp, entropy, topp


def _diagnose(name: str, off_policy: float = 0.0, **overrides):
    """(grad_ratio, grad_cos, active_frac) of one micro-batch (the whole batch) under ``name``."""
    z, lp, entropy, topp = _policy()
    mask_t = (torch.arange(lp.shape[1])[None] < torch.tensor(LENGTHS)[:, None]).float()
    noise = off_policy * torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    old = torch.where(mask_t.bool(), lp.detach() + noise, torch.zeros_like(lp))
    stats = {"old_logprobs": old, "entropy": entropy.detach(), ENTROPY: topp.detach(),
             NUCLEUS_SIZE: torch.ones_like(old)}
    batch = synthetic_batch(LENGTHS, nan_padding=False, **stats)
    method = build_from_yaml(name, **overrides)
    spec = ClipSpec(**{**ALGO.__dict__, **method.clip_overrides})
    c = ctx(clip=spec)
    method.prepare(batch, c)
    if method.needs.minibatch:
        method.prepare_minibatch(batch, {"logprobs": lp.detach()}, c, (0, 0))
    mask, adv = batch.response_mask, batch.advantages
    pb = PolicyBatch(logprobs=lp, old_logprobs=old, advantages=adv, response_mask=mask,
                     token={"entropy": entropy, ENTROPY: topp}, old_token=batch.token, method=batch.method, step=1,
                     minibatch_tokens=float(mask.sum()), minibatch_seqs=float(len(LENGTHS)), clip=spec)
    out = method.loss(pb)
    loss_mask = batch.method.get("loss_mask")
    pg = mask if loss_mask is None else loss_mask
    totals = Totals(float(pg.sum()), float((pg.sum(-1) > 0).sum()), float(mask.sum()), float(len(LENGTHS)))
    with_m = micro_batch_loss(lp, old, adv, mask, out, spec, totals, loss_mask=loss_mask).total
    without = micro_batch_loss(lp, old, adv, mask, MethodOutput(), ALGO, totals).total
    ratio, cos = grad_ratio_cos(*method_gradients(with_m, without, [z]))
    active = active_tokens(out, mask, loss_mask, clip_changed(lp, old, adv, spec, ALGO))
    return ratio, cos, active_fraction(active, mask)


def test_baseline_is_exactly_inert():
    assert _diagnose("baseline") == (0.0, 0.0, 0.0)
    assert _diagnose("baseline", off_policy=0.5) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("name,off_policy,overrides", [
    ("clip_cov", 0.0, {"lb": -1e9, "ub": 1e9, "ratio": 0.2}),  # a wide band: a fifth of the tokens detached
    ("kl_cov", 0.1, {"ratio": 0.2}),  # the penalty |lp − old| needs lp ≠ old
    ("siren", 0.0, {"anchor": 0.0, "coef": 1.0}),  # H̄ far from the anchor
    ("entropy_bonus", 0.0, {}),
    ("high_entropy", 0.0, {}),
    ("dlogp", 0.0, {}),
    ("rsi_s", 0.0, {"r_lo": 0.8, "r_hi": 1.25}),  # a narrow band: some tokens leave the loss mask
])
def test_each_method_moves_the_gradient_where_it_must_act(name, off_policy, overrides):
    ratio, cos, frac = _diagnose(name, off_policy, **overrides)
    assert 0.0 < ratio < float("inf") and -1.0 <= cos <= 1.0 and 0.0 < frac <= 1.0, (ratio, cos, frac)
    if name in ("clip_cov", "high_entropy"):  # 0/1 weights, same denominators: g_m = −g_pg on the dropped
        assert cos == pytest.approx(-ratio)  # tokens, so ‖g_m‖² = −g_m·g_pg


def test_inert_settings_give_zero():
    # KL-Cov on-policy: |lp − old| = 0 and no clip to lift (r = 1); a ratio 0 anneals Clip-Cov away
    assert _diagnose("kl_cov", 0.0, ratio=0.2) == (0.0, 0.0, 0.0)
    assert _diagnose("clip_cov", 0.0, ratio=0.0) == (0.0, 0.0, 0.0)
    assert _diagnose("entropy_bonus", 0.0, coef=0.0) == (0.0, 0.0, 0.0)
    assert _diagnose("siren", 0.0, coef=0.0)[::2] == (0.0, 0.0)


def test_active_frac_of_a_weight_method_by_hand():
    # high_entropy keeps the top ρ = 25% of 8 entropies 1..8: τ = quantile_0.75 = 6.25, kept {7, 8};
    # weight 0 on the other 6 tokens -> active 6/8
    entropy = torch.arange(1.0, 9.0).reshape(2, 4)
    batch = synthetic_batch((4, 4), nan_padding=False, entropy=entropy)
    method = build_from_yaml("high_entropy", rho=0.25)
    method.prepare(batch, ctx())
    out = method.loss(policy_batch(batch))
    assert out.token_weights.tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]
    assert active_fraction(active_tokens(out, batch.response_mask), batch.response_mask) == pytest.approx(6 / 8)


def test_active_frac_of_siren_is_its_peak_tokens_by_hand():
    # per response, H^p strictly above its ρ = 0.8 quantile (linear): [.1 .2 .3 .4 .5] -> τ = 0.42, peak {.5};
    # [0 1 0] -> τ = 0.6, peak {1}: the regulariser covers 2 of the 8 response tokens
    topp = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 1.0, 0.0, 0.0, 0.0]])
    batch = synthetic_batch((5, 3), nan_padding=False)
    method = build_from_yaml("siren", anchor=0.3, rho=0.8)
    out = method.loss(policy_batch(batch, token={ENTROPY: topp.clone().requires_grad_()}))
    assert out.active.tolist() == [[False, False, False, False, True], [False, True, False, False, False]]
    assert out.token_weights is None and out.token_loss is None  # only `active` says where it acts
    assert active_fraction(active_tokens(out, batch.response_mask), batch.response_mask) == pytest.approx(2 / 8)
