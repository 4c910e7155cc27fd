"""RSI-S: train only on tokens with a "stable" relative surprisal — Lv et al., arXiv 2606.31575.

RSI_t = S_t / max(H_t, 1e-6), with surprisal S_t = −log p_t of the sampled token and H_t the entropy of
its position (spec methods-siren-rsi-dlogp.md §2.1). On-policy, E[S] = H, so RSI ≈ 1 on average;
RSI ≈ 0 marks near-deterministic (redundant) tokens and RSI ≫ 1 rare tail samples. RSI-S keeps token t
iff r_lo ≤ RSI_t ≤ r_hi (both ends at once, §2.2) and drops the gradient of the others.

Change from GRPO: a 0/1 keep mask on the policy-gradient tokens. No official code exists, so these
are ours (spec §2.2 [A]):
- ``bounds_mode: fixed`` with placeholder r_lo = 0.25, r_hi = 4 (symmetric in log around 1), or
  ``quantile``: batch quantiles q_lo / q_hi of RSI.
- ``normalize_by: kept`` (the keep mask replaces the response mask, denominators included, via
  ``batch.method["loss_mask"]``) or ``all`` (0/1 token weights, denominators unchanged).
- ``source: old``: RSI from the rollout-policy pass (detached), so the mask is fixed within a step;
  ``current`` uses the detached current forward, as third-party ports do.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlvr_cli.methods.base import Method, MethodConfig, StepContext, TokenNeeds, method_name, register_method
from rlvr_cli.stats import quantile_1d
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch

BOUNDS_MODES = ("fixed", "quantile")
NORMALIZERS = ("kept", "all")
SOURCES = ("old", "current")
SCOPES = ("batch", "micro_batch")

H_FLOOR = 1e-6
KEEP_KEY = "rsi_keep"


def relative_surprisal(logprobs: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RSI = S / max(H, 1e-6), S = −log p (spec §2.1, §2.4). All [n, T]; 0 on padding.

    p = 1 gives S = 0, RSI = 0; H → 0 with the argmax sampled gives RSI → 0; a tail sample at H → 0
    gives a huge RSI. S is clamped at 0 (a log-prob can round to a hair above 0).
    """
    m = mask.bool()
    s = torch.where(m, -logprobs, torch.zeros_like(logprobs)).clamp(min=0.0)  # [n, T]
    h = torch.where(m, entropy, torch.ones_like(entropy)).clamp(min=H_FLOOR)  # [n, T]
    return torch.where(m, s / h, torch.zeros_like(s))


def rsi_bounds(
    rsi: torch.Tensor, mask: torch.Tensor, q_lo: float, q_hi: float,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> tuple[float, float]:
    """Quantile bounds (r_lo, r_hi) = (Q_{q_lo}, Q_{q_hi}) of RSI over the valid tokens of every rank
    (``bounds_mode: quantile``, ours), linear interpolation. rsi, mask: [n, T]."""
    values = gather(rsi[mask.bool()].float())  # [M_global]
    if values.numel() == 0:
        return 0.0, 0.0
    return float(quantile_1d(values, q_lo)), float(quantile_1d(values, q_hi))


def rsi_keep_mask(rsi: torch.Tensor, mask: torch.Tensor, r_lo: float, r_hi: float) -> torch.Tensor:
    """Keep iff r_lo ≤ RSI ≤ r_hi (closed band, spec §2.2) on valid tokens. [n, T] -> bool [n, T]."""
    return mask.bool() & (rsi >= r_lo) & (rsi <= r_hi)


@torch.no_grad()
def rsi_metrics(rsi, logprobs, entropy, keep, mask, r_lo, r_hi) -> dict[str, float]:
    """Spec §2.4: keep/drop fractions, RSI quantiles, mean H and S of kept vs dropped tokens."""
    m = mask.bool()
    n = int(m.sum())
    out = {"r_lo": float(r_lo), "r_hi": float(r_hi)}
    if n == 0:
        return {**out, "keep_frac": 0.0, "drop_low_frac": 0.0, "drop_high_frac": 0.0, "empty_seq_frac": 0.0}
    r = rsi[m].float()
    s, h, k = (-logprobs)[m].float(), entropy[m].float(), keep[m]
    rows = m.sum(-1) > 0
    out.update({
        "keep_frac": float(k.float().mean()),
        "drop_low_frac": float((r < r_lo).float().mean()),
        "drop_high_frac": float((r > r_hi).float().mean()),
        "rsi_mean": float(r.mean()),
        **{f"rsi_p{int(q * 100)}": float(quantile_1d(r, q)) for q in (0.1, 0.5, 0.9)},
        "empty_seq_frac": float((~(keep & m).any(-1))[rows].float().mean()),
    })
    for tag, sel in (("kept", k), ("dropped", ~k)):
        if sel.any():
            out[f"H_{tag}_mean"], out[f"S_{tag}_mean"] = float(h[sel].mean()), float(s[sel].mean())
    return out


@dataclass
class RsiSConfig(MethodConfig):
    name: str = method_name("rsi_s")
    bounds_mode: Literal[BOUNDS_MODES] = setting("fixed", help="fixed (bounds r_lo/r_hi; ours) | quantile "
                                                 "(batch quantiles q_lo/q_hi of RSI)")
    r_lo: float = setting(0.25, help="lower RSI bound, fixed mode (a placeholder of ours)")
    r_hi: float = setting(4.0, help="upper RSI bound, fixed mode (a placeholder of ours)")
    q_lo: float = setting(0.1, help="lower RSI quantile, quantile mode (ours)")
    q_hi: float = setting(0.9, help="upper RSI quantile, quantile mode (ours)")
    normalize_by: Literal[NORMALIZERS] = setting("kept", help="kept (the keep mask is the loss mask, "
                                                 "denominators too; ours) | all (0/1 weights over every valid token)")
    source: Literal[SOURCES] = setting("old", help="old (RSI from the rollout pass, fixed within a step; ours) | "
                                       "current (the detached current forward; needs normalize_by=all)")
    stats_scope: Literal[SCOPES] = setting("batch", help="quantile mode: batch (over the train batch; ours) | "
                                           "micro_batch (per micro-batch; needs normalize_by=all)")

    def __post_init__(self) -> None:
        for key, value, valid in (("bounds_mode", self.bounds_mode, BOUNDS_MODES),
                                  ("normalize_by", self.normalize_by, NORMALIZERS),
                                  ("source", self.source, SOURCES), ("stats_scope", self.stats_scope, SCOPES)):
            if value not in valid:
                raise ValueError(f"rsi_s.{key} {value!r}; valid: {', '.join(valid)}")
        if not (0.0 <= self.r_lo <= self.r_hi and 0.0 <= self.q_lo <= self.q_hi <= 1.0):
            raise ValueError("rsi_s needs 0 ≤ r_lo ≤ r_hi and 0 ≤ q_lo ≤ q_hi ≤ 1")
        if self.normalize_by == "kept" and not self.mask_in_prepare:
            raise ValueError(
                "rsi_s.normalize_by=kept needs the keep mask before the first micro-batch (the loop takes the "
                "mini-batch normaliser from batch.method['loss_mask']): use source=old with bounds_mode=fixed or "
                "stats_scope=batch, or set normalize_by=all")

    @property
    def mask_in_prepare(self) -> bool:
        """The keep mask is fixed for the step and computed once over the whole batch."""
        return self.source == "old" and (self.bounds_mode == "fixed" or self.stats_scope == "batch")


@register_method("rsi_s", config=RsiSConfig)
class RsiS(Method):
    """0/1 keep mask from the RSI band; as the loss mask (``kept``) or as token weights (``all``)."""

    def __init__(self, cfg: RsiSConfig):
        super().__init__(cfg)
        self._gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x

    @property
    def needs(self) -> TokenNeeds:
        return TokenNeeds(update=("entropy",)) if self.cfg.source == "current" else TokenNeeds()

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return dict(self.cfg.loss)

    def _select(self, logprobs, entropy, mask, gather):
        rsi = relative_surprisal(logprobs, entropy, mask)  # [n, T]
        if self.cfg.bounds_mode == "fixed":
            r_lo, r_hi = self.cfg.r_lo, self.cfg.r_hi
        else:
            r_lo, r_hi = rsi_bounds(rsi, mask, self.cfg.q_lo, self.cfg.q_hi, gather)
        keep = rsi_keep_mask(rsi, mask, r_lo, r_hi)  # [n, T]
        return keep, rsi_metrics(rsi, logprobs, entropy, keep, mask, r_lo, r_hi)

    @property
    def reads_rollout_stats(self) -> bool:  # RSI from the rollout pass
        return self.cfg.source == "old"

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        self._gather = ctx.gather
        if not self.cfg.mask_in_prepare:
            return {}
        mask = batch.response_mask
        keep, metrics = self._select(batch.old_logprobs, batch.token["entropy"], mask, ctx.gather)
        key = "loss_mask" if self.cfg.normalize_by == "kept" else KEEP_KEY
        batch.method[key] = keep.float()  # [N, T]
        return metrics

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        if self.cfg.mask_in_prepare:
            # kept: the loop already aggregates over batch.method["loss_mask"]; all: weights, same denominators
            if self.cfg.normalize_by == "kept":
                return MethodOutput()
            return MethodOutput(token_weights=mb.method[KEEP_KEY])
        if self.cfg.source == "current":
            lp, h = mb.logprobs.detach(), mb.token["entropy"].detach()
        else:
            lp, h = mb.old_logprobs, mb.old_token["entropy"]
        # micro-batch quantiles: local to this rank's micro-batch (no gather), like verl's per-micro statistics
        keep, metrics = self._select(lp, h, mb.response_mask, lambda x: x)
        return MethodOutput(token_weights=keep.float(), metrics=metrics)
