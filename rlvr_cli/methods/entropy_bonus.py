"""Dense entropy regularisation: the classic entropy bonus, optionally annealed.

Change from GRPO: every valid token gets the extra per-token loss −coef_t·H_t, where H_t is the
current policy's full-vocabulary entropy (with gradient) at the sampling temperature. Added before
aggregation, so the bonus is ``Agg(H, m)`` with the run's ``loss_agg_mode`` — verl's
``loss −= entropy_coeff·agg_loss(entropy)`` (``dp_actor.update_policy``; spec methods-grpo-cov.md §6).

This is the "dense, persistent" baseline of Baehr & Lei (arXiv 2604.09676): unless coef_t → 0 it
biases the optimum, which is why the coefficient can follow the same schedules as the covariance
methods (``schedule``, spec §11). Cui et al. (arXiv 2505.22617) report that 1e-4..1e-3 barely slows
entropy collapse and 1e-2 makes entropy explode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlvr_cli.methods.base import Method, MethodConfig, StepContext, TokenNeeds, method_name, register_method
from rlvr_cli.methods.schedule import Schedule
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch


def entropy_bonus_token_loss(entropy: torch.Tensor, mask: torch.Tensor, coef: float) -> torch.Tensor:
    """Per-token bonus term −coef·H (verl ``entropy_coeff``; spec §6). entropy, mask: [n, T] -> [n, T].

    Padding is zeroed *before* the product, so NaN/inf there can reach neither the value nor the gradient.
    """
    h = torch.where(mask.bool(), entropy, torch.zeros_like(entropy))  # [n, T]
    return -coef * h


@dataclass
class EntropyBonusConfig(MethodConfig):
    name: str = method_name("entropy_bonus")
    coef: float = setting(1e-3, help="coefficient λ_0 of the bonus −λ·H (ours: the middle of the range the "
                          "papers ran)")
    schedule: Schedule = setting(Schedule(), help="annealing of coef (methods/schedule.py; ours, spec §11)")

    def __post_init__(self) -> None:
        self.schedule = Schedule.from_any(self.schedule)


@register_method("entropy_bonus", config=EntropyBonusConfig)
class EntropyBonus(Method):
    """token_loss = −coef_t·H (current policy, with grad); coef_t from ``schedule``."""

    def __init__(self, cfg: EntropyBonusConfig):
        super().__init__(cfg)
        self.coef = float(cfg.coef)

    @property
    def needs(self) -> TokenNeeds:
        return TokenNeeds(update=("entropy",), update_grad=("entropy",))

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return dict(self.cfg.loss)

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        self.coef = self.cfg.schedule.value(self.cfg.coef, ctx.step, ctx.total_steps)
        return {"coef": self.coef}

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        h = mb.token["entropy"]  # [n, T] with grad
        token_loss = entropy_bonus_token_loss(h, mb.response_mask, self.coef)  # [n, T]
        with torch.no_grad():
            m = mb.response_mask.bool()
            h_mean = float(h.detach()[m].mean()) if m.any() else 0.0
        # the bonus acts on every response token while coef_t ≠ 0 (method/active_frac)
        active = mb.response_mask.bool() if self.coef else None
        return MethodOutput(token_loss=token_loss, active=active, metrics={"entropy_current": h_mean})
