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
be annealed (a ratio of exactly 0 selects nothing).

Scope of N, the means and the top-k (``stats_scope``, spec §1, §9, §12.5–6): ``mini_batch`` (default,
spec §1 [OURS]) once per optimizer step over the whole mini-batch that step sees (gathered over ranks)
from the *current* log-probs (detached); ``micro_batch`` per micro-batch on each rank from the current
log-probs, as verl's code does; ``batch`` once per step over the train batch from the rollout log-probs.

Metric names: verl's kl_cov loss returns mean |lp − old| as ``actor/ppo_kl`` and no clip fraction; that
is what ``actor/ppo_kl`` / ``actor/pg_clipfrac`` hold under this method (``reference_metrics``); the
signed k1 value stays under ``ppo/kl`` for every method.

When lp == old on every token (one mini-batch and one PPO epoch: fully on-policy), |lp − old| = 0 and
its subgradient sign(0) = 0, so KL-Cov is a no-op; this warns once.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlvr_cli.methods.base import Method, MethodConfig, StepContext, TokenNeeds, method_name, register_method
from rlvr_cli.stats import batch_covariance, token_covariance
from rlvr_cli.methods.schedule import Schedule, select_count
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch

SELECT_KEY = "kl_cov_selected"
SCOPES = ("mini_batch", "micro_batch", "batch")
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
    name: str = method_name("kl_cov")
    ratio: float = setting(2e-3, ge=0, le=1, help="fraction of the valid tokens penalised, max(floor(ratio·N), 1), "
                           "a fraction (PRIME-RL's k_percent is percent); 2e-3: the paper's 7B value")
    beta: float = setting(1.0, help="penalty coefficient β on |lp − old| (ppo_kl_coef; the paper's 1)")
    stats_scope: Literal[SCOPES] = setting("mini_batch", help="where N, the means and the top-k are taken: "
                                           "mini_batch (per optimizer step, current log-probs; ours) | micro_batch "
                                           "(verl) | batch (once per step, rollout log-probs)")
    beta_schedule: Schedule = setting(Schedule(), help="annealing of β (methods/schedule.py; ours, spec §11)")
    ratio_schedule: Schedule = setting(Schedule(), help="annealing of ratio (methods/schedule.py; ours, spec §11)")

    def __post_init__(self) -> None:
        self.beta_schedule = Schedule.from_any(self.beta_schedule)
        self.ratio_schedule = Schedule.from_any(self.ratio_schedule)
        if self.stats_scope not in SCOPES:
            raise ValueError(f"kl_cov.stats_scope {self.stats_scope!r}; valid: {', '.join(SCOPES)}")
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

    @property
    def needs(self) -> TokenNeeds:
        return TokenNeeds(minibatch=("logprobs",)) if self.cfg.stats_scope == "mini_batch" else TokenNeeds()

    @property
    def reads_rollout_stats(self) -> bool:  # batch scope selects from the rollout log-probs
        return self.cfg.stats_scope == "batch"

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        self._track_step(ctx.step)
        self.beta = self.cfg.beta_schedule.value(self.cfg.beta, ctx.step, ctx.total_steps)
        self.ratio = self.cfg.ratio_schedule.value(self.cfg.ratio, ctx.step, ctx.total_steps)
        metrics = {"beta": self.beta, "ratio": self.ratio}
        if self.cfg.stats_scope != "batch":
            return metrics
        # rollout-policy log-probs: equal to the current ones at the start of the step
        return {**metrics, **self._select_into(batch, batch.old_logprobs, ctx)}

    def prepare_minibatch(self, mini: TrainBatch, current: dict[str, torch.Tensor], ctx: StepContext,
                          where: tuple[int, int]) -> dict[str, float]:
        if self.cfg.stats_scope != "mini_batch":
            return {}
        return self._select_into(mini, current["logprobs"], ctx)

    def _select_into(self, batch: TrainBatch, logprobs: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        """Top-k by C over ``batch`` on every rank (means over all of it), stored as ``batch.method[SELECT_KEY]``."""
        mask = batch.response_mask
        cov = batch_covariance(logprobs, batch.advantages, mask, ctx.gather)  # [n, T]
        n_valid = int(ctx.gather(mask.bool().sum().reshape(1)).sum())
        selected = kl_cov_topk_mask(cov, mask, select_count(self.ratio, n_valid), ctx.gather, ctx.rank)  # [n, T]
        batch.method[SELECT_KEY] = selected.float()
        return _selection_metrics(cov, selected, n_valid, ctx.gather)

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        self._track_step(mb.step)
        metrics: dict[str, float] = {}
        if self.cfg.stats_scope in ("batch", "mini_batch"):
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
            # verl's compute_policy_loss_kl_cov: ppo_kl = masked_mean(|lp − old|), no clip fractions
            ref = {"actor/ppo_kl": float(gap[valid].mean()) if valid.any() else 0.0,
                   "actor/pg_clipfrac": 0.0, "actor/pg_clipfrac_lower": 0.0}
        return MethodOutput(token_loss=token_loss, metrics=metrics, reference_metrics=ref)

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
