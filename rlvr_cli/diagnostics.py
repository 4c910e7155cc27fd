"""Does the method act? Two per-step diagnostics of a method's effect on the GRPO update (issue 26).

- ``method/active_frac`` (every step, every micro-batch, cheap): the share of response tokens where the
  method changes anything (``active_tokens``): token_weights ≠ 1, token_loss ≠ 0, a loss mask that
  differs from the response mask, a clipped token loss that its ``clip_overrides`` change, or the tokens
  it names in ``MethodOutput.active`` (a term that shows in no per-token field: SIREN's regulariser).
- ``method/grad_ratio``, ``method/grad_cos`` (every ``trainer.diagnose_every`` steps, on one micro-batch:
  the first with a non-zero advantage, so that there is a policy gradient to compare with, of the
  step's last optimizer step (last PPO epoch, last mini-batch): the most off-policy one, where a term
  that needs lp ≠ old binds if it ever does — KL-Cov's |lp − old| is 0 on a step's first mini-batch;
  with one mini-batch and one epoch it is the step's only one):
  with L_with the loss the loop builds and L_without the same micro-batch's loss with no method
  (``MethodOutput()``, the algo's ClipSpec, no loss mask; the same IS weights, aggregation and
  KL-reference term: ``losses.micro_batch_loss`` builds both), the method's term is D = L_with − L_without:

      g_pg = ∇_θ L_without,  g_m = ∇_θ D,  grad_ratio = ‖g_m‖ / ‖g_pg‖,  grad_cos = cos(g_m, g_pg)

  over the trainable parameters θ (``requires_grad``: the adapters under LoRA). Both gradients come
  from ``torch.autograd.grad`` on the micro-batch's own forward graph (kept with ``retain_graph``), so
  there is no extra forward; ``autograd.grad`` never writes ``.grad`` and fires no gradient-accumulation
  hook (DeepSpeed ZeRO-1/2 reduce there), so the real update is bit-for-bit the same. Cost: two extra
  backward passes of one micro-batch, and two gradient-sized buffers held while they are reduced.
  Under ZeRO-3 the module's parameters are partitioned, so the config refuses the diagnostic.

The ratio reads: 0 = inert (the method changes no gradient), ≪ 1 a small correction, ~1 the method's
term is as large as the policy gradient itself; cos < 0 means it opposes the policy gradient (a
penalty, a dropped token), cos > 0 that it amplifies it (a weight > 1).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from rlvr_cli.losses import ClipSpec, clipped_token_loss
from rlvr_cli.types import MethodOutput


# ------------------------------------------------------------------------------------- active tokens
@torch.no_grad()
def clip_changed(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                 spec: ClipSpec, base: ClipSpec, with_spec: torch.Tensor | None = None) -> torch.Tensor | None:
    """Tokens whose clipped loss under the method's ``spec`` differs from the algo's ``base`` (bool
    [n, T]), or None when the two specs are equal. ``with_spec``: the clipped token loss under ``spec``
    where the caller has it already (``MicroBatchLoss.clipped``), so only the one under ``base`` is computed."""
    if spec == base:
        return None
    lp = logprobs.detach()
    if with_spec is None:
        with_spec, _ = clipped_token_loss(lp, old_logprobs, advantages, spec)
    without, _ = clipped_token_loss(lp, old_logprobs, advantages, base)
    return with_spec.detach() != without


@torch.no_grad()
def active_tokens(out: MethodOutput, mask: torch.Tensor, loss_mask: torch.Tensor | None = None,
                  clip: torch.Tensor | None = None) -> torch.Tensor:
    """Response tokens where the method changes anything (bool [n, T]): ``out.active``, token_weights ≠ 1,
    token_loss ≠ 0, ``loss_mask`` ≠ ``mask`` and ``clip`` (``clip_changed``). All [n, T]."""
    m = mask.bool()
    act = torch.zeros_like(m)
    if out.active is not None:
        act |= out.active.bool()
    if out.token_weights is not None:
        act |= out.token_weights.detach() != 1
    if out.token_loss is not None:
        act |= out.token_loss.detach() != 0
    if loss_mask is not None:
        act |= loss_mask.bool() != m
    if clip is not None:
        act |= clip.bool()
    return act & m


def active_fraction(active: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the valid tokens that are active (0 with none). [n, T] -> float."""
    n = float(mask.sum())
    return float((active.bool() & mask.bool()).sum()) / n if n else 0.0


# ---------------------------------------------------------------------------------- gradient ratio
def method_gradients(loss_with: torch.Tensor, loss_without: torch.Tensor, params: Sequence[torch.Tensor]
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(g_m, g_pg) = (∇(L_with − L_without), ∇L_without) over ``params``, one tensor per parameter
    (zeros where a loss does not reach it). The graph is kept (``retain_graph``) for the real backward;
    no ``.grad`` is written."""
    params = list(params)

    def grad(loss: torch.Tensor) -> list[torch.Tensor]:
        if not loss.requires_grad:
            return [torch.zeros_like(p) for p in params]
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]

    g_pg = grad(loss_without)
    g_m = grad(loss_with - loss_without)
    return g_m, g_pg


CHUNK = 1 << 24  # elements per fp32 slice in ``_dot``: bounded temporaries for a bf16 embedding's gradient


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Σ_params ⟨a, b⟩: fp32 dot products of slices (fp64 for fp64 tensors), summed in fp64, one sync."""
    parts = []
    for x, y in zip(a, b):
        up = torch.float64 if x.dtype == torch.float64 else torch.float32
        parts += [torch.dot(u.to(up), v.to(up)).double() for u, v in zip(x.reshape(-1).split(CHUNK), y.reshape(-1).split(CHUNK))]
    return float(torch.stack(parts).sum()) if parts else 0.0


def grad_ratio_cos(g_m: Sequence[torch.Tensor], g_pg: Sequence[torch.Tensor]) -> tuple[float, float]:
    """(‖g_m‖ / ‖g_pg‖, cos(g_m, g_pg)) over the concatenation of the per-parameter tensors.

    The ratio is 0 when g_m is exactly 0 and inf when only g_pg is (the method is the whole update; the
    metrics file records it as null); the cosine is 0 when either is 0."""
    nm, npg, cross = _dot(g_m, g_m) ** 0.5, _dot(g_pg, g_pg) ** 0.5, _dot(g_m, g_pg)
    if nm == 0.0:
        return 0.0, 0.0
    if npg == 0.0:
        return float("inf"), 0.0
    return nm / npg, max(-1.0, min(1.0, cross / (nm * npg)))  # rounding can leave |cos| a hair above 1


def gradient_diagnostic(loss_with: torch.Tensor, loss_without: torch.Tensor,
                        params: Sequence[torch.Tensor]) -> dict[str, float]:
    """``method/grad_ratio`` and ``method/grad_cos`` of one micro-batch (see the module docstring)."""
    ratio, cos = grad_ratio_cos(*method_gradients(loss_with, loss_without, params))
    return {"method/grad_ratio": ratio, "method/grad_cos": cos}
