"""Δlog p advantage reweighting — Huang et al., *Beyond Magnitude*, arXiv 2603.22117 (ICLR'26), Eq. 8;
reference ``Hesse73/RLVR-Directions`` ``verl/recipe/logprl`` with ``reweight.method=reshape_reversed``.

RLVR's gains concentrate on low-probability tokens (large positive Δlog p between the RL and the base
model). The training-time use scales each token's advantage by

    Ã_{i,t} = Â_i · (1 + α·(1 − π_old(y_t))),   π_old = exp(min(old_logprob, 0))

so weights lie in [1, 1+α]: 1 at p = 1, 1+α as p → 0 (spec methods-siren-rsi-dlogp.md §3.4). It applies
to every response token and both advantage signs.

Change from GRPO: the weight goes in as ``token_weights``. Because it is > 0 and multiplies the advantage,
−(wA)·clip(r) = w·(−A·clip(r)) and the clip decision depends only on r and sign(A) (unchanged by w > 0),
so weighting the per-token loss equals weighting the advantage (dual-clip included: min(wx, wy) = w·min(x, y)).
The repo's yaml default ``normalize`` (1/(1+α−p)) is a different formula; only ``reshape_reversed``
was used in the paper runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlvr_cli.methods.base import Method, MethodConfig, StepContext, method_name, register_method
from rlvr_cli.stats import quantile_1d
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch


def dlogp_weights(old_logprobs: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """w = 1 + α(1 − exp(min(old_lp, 0))) (arXiv 2603.22117 Eq. 8, ``reshape_reversed``). [n, T] -> [n, T].

    Detached; 0 on padding, so NaN there cannot leak.
    """
    lp = torch.where(mask.bool(), old_logprobs.detach(), torch.zeros_like(old_logprobs)).clamp(max=0.0)
    w = 1.0 + alpha * (1.0 - torch.exp(lp))  # [n, T] in [1, 1+α]
    return torch.where(mask.bool(), w, torch.zeros_like(w))


@dataclass
class DlogpConfig(MethodConfig):
    name: str = method_name("dlogp")
    alpha: float = setting(0.2, ge=0, help="α of the token weight 1 + α(1 − π_old(y_t)) (0.2 for "
                           "Qwen2.5-Math-7B, 0.1 for Qwen3-8B-Base)")

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"dlogp.alpha must be ≥ 0 (weights in [1, 1+α]), got {self.alpha}")


@register_method("dlogp", config=DlogpConfig)
class Dlogp(Method):
    """Token weights 1 + α(1 − p_old): larger updates on low-probability tokens."""

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return dict(self.cfg.loss)

    @torch.no_grad()
    @property
    def reads_rollout_stats(self) -> bool:  # its metrics read the rollout log-probs
        return True

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        m = batch.response_mask.bool()
        if not m.any():
            return {}
        lp = batch.old_logprobs[m].float()  # [M]
        w = dlogp_weights(batch.old_logprobs, batch.response_mask, self.cfg.alpha)[m]
        return {
            "weight_mean": float(w.mean()),
            "ppl": float(torch.exp(-lp.mean())),
            "old_logprob_p10": float(quantile_1d(lp, 0.1)),
            "old_logprob_p50": float(quantile_1d(lp, 0.5)),
            "old_logprob_p90": float(quantile_1d(lp, 0.9)),
        }

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        return MethodOutput(token_weights=dlogp_weights(mb.old_logprobs, mb.response_mask, self.cfg.alpha))
