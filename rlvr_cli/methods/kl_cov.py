"""KL-Cov — Cui et al., *The Entropy Mechanism of RL for Reasoning LMs*, arXiv 2505.22617 §5;
verl / PRIME-RL ``compute_policy_loss_kl_cov`` (spec methods-grpo-cov.md §9).

Rank tokens by the centred covariance C = (A − Ā)(lp − l̄) and add a per-token penalty β·|lp − old| to
the top-k, k = max(floor(ratio·N), 1). This slows the update exactly where entropy is being consumed;
every token keeps its policy gradient. The paper writes the penalty as β·KL(π_old‖π_θ); the code (and
we) use the absolute log-ratio, whose gradient on a selected token is β·sign(lp − old).

Change from GRPO: ``token_loss`` on the selected tokens, and no PPO clipping at all
(``clip_overrides = {"clip": False}``: the surrogate is −A·r).

Ours (spec §9, §11): ratio in fraction units (PRIME-RL's ``k_percent`` is in percent); ties in the top-k
broken stably — larger C first, then smaller flat index (rank-major, then row-major); β and the ratio can
be annealed (a ratio of exactly 0 selects nothing); ``stats_scope: batch`` (default) ranks C once per
step over the whole train batch with the rollout-policy log-probs (= current at the step start);
``micro_batch`` ranks per micro-batch from the current log-probs, as verl does.

When lp == old on every token (one mini-batch and one PPO epoch: fully on-policy), |lp − old| = 0 and
its subgradient sign(0) = 0, so KL-Cov is a no-op; this warns once.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rlvr_cli.methods.base import Method, MethodConfig, StepContext, register_method
from rlvr_cli.stats import batch_covariance, token_covariance
from rlvr_cli.methods.schedule import Schedule, select_count
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch

SELECT_KEY = "kl_cov_selected"
ON_POLICY_WARNING = (
    "kl_cov: lp == old on every token of a whole training step, so the KL-Cov penalty |lp − old| and its "
    "gradient were 0 (fully on-policy: one mini-batch and one PPO epoch). KL-Cov only binds from the second "
    "mini-batch/epoch of a step on: set algo.mini_batch_size below the train batch or algo.ppo_epochs > 1."
)


def stable_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    """bool [M]: the k largest values; ties go to the smaller index (a stable descending sort). [M] -> [M]."""
    out = torch.zeros_like(values, dtype=torch.bool)
    if k <= 0 or values.numel() == 0:
        return out
    order = torch.sort(values, descending=True, stable=True).indices[:k]  # [k]
    out[order] = True
    return out


def kl_cov_topk_mask(
    cov: torch.Tensor, mask: torch.Tensor, k: int,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x, rank: int = 0,
) -> torch.Tensor:
    """Top-k valid tokens by C over every rank (Cui et al. §5, V ``compute_policy_loss_kl_cov``).

    cov, mask: [n, T]. The valid values of all ranks are gathered in rank order, ranked once with the
    stable tie rule, and this rank keeps its own slice. Returns bool [n, T].
    """
    m = mask.bool()
    local = cov[m].float()  # [M_local], row-major
    values = gather(local)  # [M_global]
    offset = int(gather(torch.tensor([local.numel()], device=cov.device))[:rank].sum())
    top = stable_topk(values, k)[offset : offset + local.numel()]  # [M_local]
    selected = torch.zeros_like(m)
    selected[m] = top
    return selected


def kl_cov_token_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, selected: torch.Tensor, beta: float
) -> torch.Tensor:
    """β·|lp − old| on the selected tokens, 0 elsewhere (V's ``ppo_kl_coef``·abs log-ratio). [n, T] -> [n, T].

    Unselected/padding positions are zeroed *before* ``abs``, so NaN there gets neither value nor gradient.
    """
    d = torch.where(selected.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs))  # [n, T]
    return beta * d.abs()


@dataclass
class KlCovConfig(MethodConfig):
    name: str = "kl_cov"
    ratio: float = 2e-3
    beta: float = 1.0
    stats_scope: str = "batch"
    beta_schedule: Any = field(default_factory=dict)
    ratio_schedule: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.beta_schedule = Schedule.from_any(self.beta_schedule)
        self.ratio_schedule = Schedule.from_any(self.ratio_schedule)
        if self.stats_scope not in ("batch", "micro_batch"):
            raise ValueError(f"kl_cov.stats_scope {self.stats_scope!r}; valid: batch, micro_batch")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(
                f"kl_cov.ratio is a fraction of tokens in [0, 1] (not PRIME-RL's percent), got {self.ratio}")


@register_method("kl_cov", config=KlCovConfig)
class KlCov(Method):
    """β·|lp − old| on the top-k covariance tokens; unclipped surrogate."""

    DEFAULT_CLIP = {"clip": False}

    def __init__(self, cfg: KlCovConfig):
        super().__init__(cfg)
        self.beta, self.ratio = float(cfg.beta), float(cfg.ratio)
        self.warned = False
        self._step, self._step_selected, self._step_off_policy = None, False, False

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return {**self.DEFAULT_CLIP, **self.cfg.loss}

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        self._track_step(ctx.step)
        self.beta = self.cfg.beta_schedule.value(self.cfg.beta, ctx.step, ctx.total_steps)
        self.ratio = self.cfg.ratio_schedule.value(self.cfg.ratio, ctx.step, ctx.total_steps)
        metrics = {"beta": self.beta, "ratio": self.ratio}
        if self.cfg.stats_scope != "batch":
            return metrics
        mask = batch.response_mask
        # rollout-policy log-probs: equal to the current ones at the start of the step
        cov = batch_covariance(batch.old_logprobs, batch.advantages, mask, ctx.gather)  # [N, T]
        n_valid = int(ctx.gather(mask.bool().sum().reshape(1)).sum())
        selected = kl_cov_topk_mask(cov, mask, select_count(self.ratio, n_valid), ctx.gather, ctx.rank)  # [N, T]
        batch.method[SELECT_KEY] = selected.float()
        return {**metrics, **_selection_metrics(cov, selected, n_valid, ctx.gather)}

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        self._track_step(mb.step)
        metrics: dict[str, float] = {}
        if self.cfg.stats_scope == "batch":
            selected = mb.method[SELECT_KEY].bool()
        else:  # verl: C from the current (detached) log-probs of this micro-batch, plain means
            cov = token_covariance(mb.logprobs.detach(), mb.advantages, mb.response_mask)  # [n, T]
            n_valid = int(mb.response_mask.sum())
            selected = kl_cov_topk_mask(cov, mb.response_mask, select_count(self.ratio, n_valid))
            metrics.update(_selection_metrics(cov, selected, n_valid, lambda x: x))
        token_loss = kl_cov_token_loss(mb.logprobs, mb.old_logprobs, selected, self.beta)  # [n, T]
        with torch.no_grad():
            valid = mb.response_mask.bool()
            gap = (mb.logprobs.detach() - mb.old_logprobs).abs()
            self._step_selected |= bool(selected.any())
            self._step_off_policy |= bool((gap[valid] > 0).any())
            metrics["penalty_mean"] = float(gap[selected].mean()) if selected.any() else 0.0
        return MethodOutput(token_loss=token_loss, metrics=metrics)

    def _track_step(self, step: int) -> None:
        """At the first call of a new step, warn (once per run) if the previous step was fully on-policy."""
        if step == self._step:
            return
        if self._step is not None and self._step_selected and not self._step_off_policy and not self.warned:
            warnings.warn(ON_POLICY_WARNING, RuntimeWarning, stacklevel=3)
            self.warned = True
        self._step, self._step_selected, self._step_off_policy = step, False, False


@torch.no_grad()
def _selection_metrics(cov, selected, n_valid, gather) -> dict[str, float]:
    sel = gather(cov[selected].float())  # [k]
    k = sel.numel()
    return {"n_selected": float(k), "selected_frac": k / n_valid if n_valid else 0.0,
            "topk_min": float(sel.min()) if k else 0.0, "topk_mean": float(sel.mean()) if k else 0.0}
