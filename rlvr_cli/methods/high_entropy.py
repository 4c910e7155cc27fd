"""High-entropy ("forking") token selection: Wang et al., *Beyond the 80/20 Rule*, arXiv 2506.01939.

Change from GRPO: only the top-ρ fraction of tokens by entropy keep their policy gradient (ρ = 0.2 in
the paper: "train on the 20% highest-entropy tokens"); the others get token weight 0 but stay in the
loss denominator. Semantics follow TRL's ``GRPOConfig.top_entropy_quantile`` /
``GRPOTrainer.get_high_entropy_mask``: threshold τ = quantile_{1−ρ}(H over every valid token,
gathered over processes, linear interpolation) and keep ``H ≥ τ`` (ties at τ are all kept).

Deviation [ours]: by default (``stats_scope: batch``) H is the *rollout* policy's entropy and τ is taken
over the whole train batch once per step, so the kept set is fixed within a step. TRL computes H from
the current forward of each loss call (``stats_scope: micro_batch`` here, gathered over ranks too).
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

SCOPES = ("batch", "micro_batch")
KEEP_KEY = "high_entropy_keep"


def high_entropy_mask(
    entropy: torch.Tensor, mask: torch.Tensor, rho: float,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of the top-ρ entropy tokens (TRL ``get_high_entropy_mask``, arXiv 2506.01939 §4).

    entropy, mask: [n, T]; ``gather`` concatenates the valid values of every rank. Returns the 0/1 keep
    mask [n, T] (bool, False on padding) and the threshold τ = quantile_{1−ρ} (scalar; NaN if no token).
    """
    m = mask.bool()
    values = gather(entropy[m].float())  # [M_global]
    if values.numel() == 0:
        return torch.zeros_like(m), entropy.new_tensor(float("nan"))
    tau = quantile_1d(values, 1.0 - rho)
    keep = m & (torch.where(m, entropy, torch.full_like(entropy, float("-inf"))) >= tau)  # [n, T]
    return keep, tau


@dataclass
class HighEntropyConfig(MethodConfig):
    name: str = method_name("high_entropy")
    rho: float = setting(0.2, help="ρ, the fraction of tokens kept (the highest-entropy 20% in the paper)")
    stats_scope: Literal[SCOPES] = setting("batch", help="batch (threshold over the train batch, rollout "
                                           "entropy; ours) | micro_batch (per loss call, current entropy; TRL)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"high_entropy.rho must be in [0, 1] (fraction of tokens kept), got {self.rho}")
        if self.stats_scope not in SCOPES:
            raise ValueError(f"high_entropy.stats_scope {self.stats_scope!r}; valid: {', '.join(SCOPES)}")


@register_method("high_entropy", config=HighEntropyConfig)
class HighEntropy(Method):
    """Token weights 1 on the top-ρ entropy tokens, 0 elsewhere; denominators unchanged."""

    def __init__(self, cfg: HighEntropyConfig):
        super().__init__(cfg)
        self._gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x

    @property
    def needs(self) -> TokenNeeds:
        # micro_batch scope ranks the current policy's entropy (no grad needed: it only selects)
        return TokenNeeds(update=("entropy",)) if self.cfg.stats_scope == "micro_batch" else TokenNeeds()

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return dict(self.cfg.loss)

    @property
    def reads_rollout_stats(self) -> bool:  # batch scope ranks the rollout entropy
        return self.cfg.stats_scope == "batch"

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        self._gather = ctx.gather
        if self.cfg.stats_scope != "batch":
            return {}
        mask = batch.response_mask
        keep, tau = high_entropy_mask(batch.token["entropy"], mask, self.cfg.rho, ctx.gather)
        batch.method[KEEP_KEY] = keep.float()  # [N, T]
        return _metrics(keep, mask, tau)

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        if self.cfg.stats_scope == "batch":
            return MethodOutput(token_weights=mb.method[KEEP_KEY])
        keep, tau = high_entropy_mask(mb.token["entropy"].detach(), mb.response_mask, self.cfg.rho, self._gather)
        return MethodOutput(token_weights=keep.float(), metrics=_metrics(keep, mb.response_mask, tau))


@torch.no_grad()
def _metrics(keep: torch.Tensor, mask: torch.Tensor, tau: torch.Tensor) -> dict[str, float]:
    n = float(mask.sum())
    return {"kept_frac": float(keep.sum()) / n if n else 0.0, "threshold": float(tau) if n else 0.0}
