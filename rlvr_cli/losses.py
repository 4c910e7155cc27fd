"""Stage 6: the clipped policy objective, its aggregation modes and the reference-KL estimators.

Everything here is a pure function on tensors (spec: methods-grpo-cov.md §3–5, verl ``core_algos``).
Methods never copy the clip: they hand ``micro_batch_loss`` weights, masks or extra per-token terms
(``rlvr_cli.types.MethodOutput``) and the loop calls it once per micro-batch (twice on a diagnosed one:
with the method and without it, ``rlvr_cli.diagnostics``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm",
             "seq-mean-token-sum-norm-by-seqs")
KL_TYPES = ("k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl")
# "<type>+": the straight-through form (the value of <type>, the gradient of k2; verl's "+" suffix)
KL_CHOICES = (*KL_TYPES, *(f"{k}+" for k in KL_TYPES))


@dataclass(frozen=True, kw_only=True)
class KLConfig:
    """``algo.kl``: the KL penalty to the initial policy, added to the loss (``kl_penalty``)."""

    enabled: bool = setting(help="add coef x KL(pi || pi_ref) to the loss (loads the reference policy)")
    coef: float = setting(0.001, ge=0, help="the penalty's weight")
    type: Literal[KL_CHOICES] = setting("low_var_kl", help="the estimator: k1 | kl | abs | k2 | mse | k3 | "
                                        "low_var_kl, each with a + form (straight-through, verl's)")


@dataclass(frozen=True)
class ClipSpec:
    """Settings of the clipped surrogate. ``clip_ratio_c=None`` turns dual-clip off; ``clip=False`` gives
    the unclipped importance-weighted objective −A·r (KL-Cov); ``log_ratio_clamp=None`` disables the ±20
    clamp on log r (reference parity for Clip-Cov/KL-Cov, which have none)."""

    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = 3.0
    clip: bool = True
    log_ratio_clamp: float | None = 20.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ(x·m)/(Σm + 1e-8), verl's metric mean; ``x`` may hold NaN/inf where ``mask`` is 0."""
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    return (x * mask).sum() / (mask.sum() + 1e-8)


def clipped_token_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, spec: ClipSpec
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO loss with clip-higher and dual-clip (verl ``compute_policy_loss_vanilla``).

    δ = clamp(lp − old, ±20), r = e^δ, L1 = −A·r, L2 = −A·clip(r, 1−ε_low, 1+ε_high), Lc = max(L1, L2);
    for A < 0, ℓ = min(Lc, −A·c) (dual clip). All tensors are [n, T]; returns ℓ [n, T] and boolean
    per-token masks ``clipped`` ([L2 > L1]) and ``clipped_lower`` (dual clip bound) for metrics.
    """
    delta = logprobs - old_logprobs
    if spec.log_ratio_clamp is not None:
        delta = delta.clamp(-spec.log_ratio_clamp, spec.log_ratio_clamp)
    ratio = torch.exp(delta)
    loss1 = -advantages * ratio
    if not spec.clip:
        false = torch.zeros_like(loss1, dtype=torch.bool)
        return loss1, {"clipped": false, "clipped_lower": false, "neg_log_ratio": -delta.detach()}
    loss2 = -advantages * ratio.clamp(1.0 - spec.clip_ratio_low, 1.0 + spec.clip_ratio_high)
    loss_c = torch.maximum(loss1, loss2)
    clipped = (loss2 > loss1).detach()
    loss = loss_c
    clipped_lower = torch.zeros_like(clipped)
    if spec.clip_ratio_c is not None:
        assert spec.clip_ratio_c > 1.0, "dual-clip constant clip_ratio_c must be > 1"
        loss3 = -advantages * spec.clip_ratio_c
        dual = torch.minimum(loss_c, loss3)
        clipped_lower = ((loss_c > loss3) & (advantages < 0)).detach()
        loss = torch.where(advantages < 0, dual, loss_c)
    return loss, {"clipped": clipped, "clipped_lower": clipped_lower, "neg_log_ratio": -delta.detach()}


def agg_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    scale_factor: float | None = None,
) -> torch.Tensor:
    """Aggregate a per-token loss [n, T] to a scalar (verl ``agg_loss``).

    token-mean:              Σ m·ℓ / N_tok,   N_tok = ``num_tokens`` or Σm
    seq-mean-token-sum:      Σ_i Σ_t m·ℓ / G, G = ``num_seqs`` or #rows with a valid token
    seq-mean-token-mean:     Σ_i (Σ_t m·ℓ / n_i) / G
    seq-mean-token-sum-norm: Σ_i Σ_t m·ℓ / C (Dr.GRPO), C = ``scale_factor`` or T. No division by the
                             number of sequences and no dp factor (verl; spec §4, §12.10): the loss of a
                             mini-batch is its token sum over C, so it grows with the batch.
    seq-mean-token-sum-norm-by-seqs: the same, also divided by G (``num_seqs`` or #rows with a valid
                             token) [ours, a named option: a mean over responses; it rescales every
                             coefficient added to the loss by 1/G against verl].

    Passing the mini-batch totals as ``num_tokens`` / ``num_seqs`` makes the sum of micro-batch losses
    equal the loss of the whole mini-batch (the global normaliser). With no valid token the result is a
    graph-connected 0, never NaN.
    """
    mask = mask.to(loss.dtype)
    loss = torch.where(mask.bool(), loss, torch.zeros_like(loss))  # padding may hold NaN/inf
    token_sum = (loss * mask).sum(-1)  # [n]
    valid_rows = mask.sum(-1) > 0
    if mode == "token-mean":
        denom = float(num_tokens) if num_tokens is not None else mask.sum()
        return token_sum.sum() / denom if float(denom) > 0 else token_sum.sum() * 0.0
    if mode in ("seq-mean-token-sum", "seq-mean-token-mean"):
        per_seq = token_sum if mode == "seq-mean-token-sum" else token_sum / (mask.sum(-1) + 1e-8)
        per_seq = torch.where(valid_rows, per_seq, torch.zeros_like(per_seq))
        denom = float(num_seqs) if num_seqs is not None else float(valid_rows.sum())
        return per_seq.sum() / denom if denom > 0 else per_seq.sum() * 0.0
    if mode in ("seq-mean-token-sum-norm", "seq-mean-token-sum-norm-by-seqs"):
        c = float(scale_factor) if scale_factor is not None else float(loss.shape[-1])
        out = token_sum.sum() / c
        if mode == "seq-mean-token-sum-norm":
            return out
        denom = float(num_seqs) if num_seqs is not None else float(valid_rows.sum())
        return out / denom if denom > 0 else out * 0.0
    raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {', '.join(AGG_MODES)}")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference (verl ``kl_penalty``), [n, T].

    k1/kl: d; abs: |d|; k2/mse: ½d²; k3/low_var_kl: e^x − x − 1 with x = clamp(ref − lp, ±20), clamped
    to [−10, 10]; here d = lp − ref. A ``+`` suffix (e.g. ``k3+``) keeps the named estimator's value but
    takes the gradient of k2 (straight-through), the semantics verl documents.
    """
    straight_through = kind.endswith("+")
    base = kind.rstrip("+")
    d = logprobs - ref_logprobs
    if base in ("k1", "kl"):
        value = d
    elif base == "abs":
        value = d.abs()
    elif base in ("k2", "mse"):
        value = 0.5 * d.square()
    elif base in ("k3", "low_var_kl"):
        x = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
        value = (torch.exp(x) - x - 1.0).clamp(-10.0, 10.0)
    else:
        raise ValueError(f"unknown kl type {kind!r}; valid: {', '.join(KL_TYPES)} (optionally with '+')")
    if straight_through:
        k2 = 0.5 * d.square()
        value = k2 - k2.detach() + value.detach()
    return value


@dataclass
class MicroBatchLoss:
    """A micro-batch's share of the mini-batch loss and its parts."""

    total: torch.Tensor  # pg + reference + extra: what is backwarded
    pg: torch.Tensor  # the aggregated clipped policy-gradient term
    extra: torch.Tensor | None  # the method's extra_loss times the micro-batch's share of the responses
    clipped: torch.Tensor | None = None  # [n, T] clipped_token_loss under ``spec``, before any weight
    clip_info: dict[str, torch.Tensor] = field(default_factory=dict)  # clipped_token_loss's masks


def micro_batch_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    out: MethodOutput, spec: ClipSpec, totals: Any, mode: str = "token-mean", scale_factor: float | None = None,
    loss_mask: torch.Tensor | None = None, is_weight: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> MicroBatchLoss:
    """The GRPO loss of one micro-batch, changed only through ``out`` (the method's MethodOutput),
    ``spec`` (the ClipSpec after its overrides) and ``loss_mask`` (its ``batch.method["loss_mask"]``).

    ℓ = clipped_token_loss(spec) · is_weight · token_weights + token_loss  [n, T]; pg = agg_loss(ℓ) over
    ``loss_mask`` with the mini-batch totals ``totals.pg_tokens`` / ``pg_seqs``, or over ``mask`` with
    ``totals.tokens`` / ``seqs`` when there is none; total = pg + reference + extra_loss · share, share =
    this micro-batch's responses over the mini-batch's (so the sum over micro-batches is a mean).
    ``reference``: the scaled KL-reference term (the same for every method). ``totals``: an object with
    ``pg_tokens, pg_seqs, tokens, seqs`` (``trainer.actor.Totals``). Plain GRPO is ``MethodOutput()`` with
    the algo's ClipSpec and no loss mask.
    """
    clipped, clip_info = clipped_token_loss(logprobs, old_logprobs, advantages, spec)  # [n, T]
    token_loss = clipped
    if is_weight is not None:  # truncated IS for the engine/trainer mismatch
        token_loss = token_loss * is_weight
    if out.token_weights is not None:
        token_loss = token_loss * out.token_weights
    if out.token_loss is not None:
        token_loss = token_loss + out.token_loss
    if loss_mask is None:
        pg_mask, num_tokens, num_seqs = mask, totals.tokens, totals.seqs
    else:
        pg_mask, num_tokens, num_seqs = loss_mask, totals.pg_tokens, totals.pg_seqs
    pg = agg_loss(token_loss, pg_mask, mode, num_tokens=num_tokens, num_seqs=num_seqs, scale_factor=scale_factor)
    total = pg if reference is None else pg + reference
    extra = None
    if out.extra_loss is not None:
        extra = out.extra_loss * (float((mask.sum(-1) > 0).sum()) / max(float(totals.seqs), 1.0))
        total = total + extra
    return MicroBatchLoss(total=total, pg=pg, extra=extra, clipped=clipped, clip_info=clip_info)
