"""Clip-Cov — Cui et al., *The Entropy Mechanism of RL for Reasoning LMs*, arXiv 2505.22617 §5;
verl / PRIME-RL ``compute_policy_loss_clip_cov`` (spec methods-grpo-cov.md §8).

A few tokens with a large positive covariance C = (A − Ā)(lp − l̄) drive most of the entropy decrease
(§4). Clip-Cov draws a small uniform random subset S of the tokens with lb < C < ub that the PPO clip
has not already clipped, |S| = min(max(floor(ratio·N), 1), |Ω|), and removes their gradient: token
weight 0, still counted in the loss denominator. Every other token gets the ordinary clipped loss.

Change from GRPO: 0/1 token weights. Also, as every Clip-Cov recipe does, the clip range is widened to
ε_low = ε_high = 1 (r clamped to [0, 2]) and dual-clip is off (``clip_overrides``).

Scope of N, the means and the draw (``stats_scope``, spec §1, §8, §12.5–6):
- ``mini_batch`` (default, spec §1 [OURS]): once per optimizer step over the whole mini-batch that
  step sees (gathered over ranks), from the *current* log-probs (detached; a no-grad pass before the
  step, the rollout pass itself on a step's first mini-batch), PPO-clipped tokens excluded;
- ``micro_batch``: per micro-batch on each rank from the current log-probs — verl's code;
- ``batch``: once per step over the whole train batch from the rollout log-probs, the selection
  reused in every mini-batch and epoch (tokens clipped later can never be excluded).

Ours (spec §8, §11): the subset comes from a dedicated ``torch.Generator`` seeded from
(seed, step, epoch, minibatch, microbatch, rank), never torch's global one; the ratio can be annealed
(a ratio of exactly 0 selects nothing). verl logs the selected fraction |S|/N as
``actor/pg_clipfrac`` (``reference_metrics``); the PPO clip fraction stays under ``ppo/clipfrac``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlvr_cli.losses import ClipSpec, clipped_token_loss
from rlvr_cli.methods.base import Method, MethodConfig, StepContext, TokenNeeds, method_name, register_method
from rlvr_cli.stats import batch_covariance, token_covariance
from rlvr_cli.methods.schedule import Schedule, select_count
from rlvr_cli.typed import setting
from rlvr_cli.types import MethodOutput, PolicyBatch, TrainBatch

DETACH_KEY = "clip_cov_detach"
SCOPES = ("mini_batch", "micro_batch", "batch")


def clip_cov_candidates(
    cov: torch.Tensor, mask: torch.Tensor, clipped: torch.Tensor, lb: float, ub: float
) -> torch.Tensor:
    """Ω = valid, not PPO-clipped, lb < C < ub (strict, as in the code; the paper writes a closed band).

    cov, mask, clipped: [n, T] -> bool [n, T].
    """
    return mask.bool() & ~clipped.bool() & (cov > lb) & (cov < ub)


def select_by_priority(
    candidates: torch.Tensor, priorities: torch.Tensor, n_select: int,
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> torch.Tensor:
    """The ``n_select`` candidates with the smallest priority, over every rank.

    candidates: bool [n, T]; priorities: [|Ω_local|] one i.i.d. uniform key per candidate in row-major
    order; ``gather`` concatenates the keys of every rank. With i.i.d. keys this is a uniform random
    subset without replacement of the global Ω (verl: ``randperm(|Ω|)[:n_clip]``), and each rank keeps
    its own members. Returns bool [n, T]; all candidates if n_select ≥ |Ω|, none if n_select = 0.
    """
    selected = torch.zeros_like(candidates, dtype=torch.bool)
    keys = gather(priorities)  # [|Ω_global|]
    n = min(int(n_select), keys.numel())
    if n <= 0:
        return selected
    threshold = torch.kthvalue(keys.float(), n).values
    selected[candidates] = priorities.float() <= threshold
    return selected


def clip_cov_weights(selected: torch.Tensor) -> torch.Tensor:
    """Token weights: 0 on the selected tokens (value and gradient 0), 1 elsewhere. bool [n, T] -> [n, T]."""
    return 1.0 - selected.float()


def draw_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions, unlike ``hash``)."""
    digest = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class ClipCovConfig(MethodConfig):
    name: str = method_name("clip_cov")
    ratio: float = setting(2e-4, ge=0, le=1, help="fraction r of the valid tokens detached, max(floor(r·N), 1) "
                           "(verl default and the paper's 7B/32B value)")
    lb: float = setting(1.0, help="lower covariance bound ω_low, strict (verl default)")
    ub: float = setting(5.0, help="upper covariance bound ω_high, strict (verl default)")
    stats_scope: Literal[SCOPES] = setting("mini_batch", help="where N, the means and the draw are taken: "
                                           "mini_batch (per optimizer step, current log-probs; ours) | micro_batch "
                                           "(verl) | batch (once per step, rollout log-probs)")
    ratio_schedule: Schedule = setting(Schedule(), help="annealing of ratio (methods/schedule.py; ours, spec §11)")

    def __post_init__(self) -> None:
        self.ratio_schedule = Schedule.from_any(self.ratio_schedule)
        if self.stats_scope not in SCOPES:
            raise ValueError(f"clip_cov.stats_scope {self.stats_scope!r}; valid: {', '.join(SCOPES)}")
        if not self.lb < self.ub:
            raise ValueError(f"clip_cov needs lb < ub, got lb={self.lb}, ub={self.ub}")


@register_method("clip_cov", config=ClipCovConfig)
class ClipCov(Method):
    """Detach a random subset of the band-covariance tokens (token weight 0)."""

    DEFAULT_CLIP = {"clip_ratio_low": 1.0, "clip_ratio_high": 1.0, "clip_ratio_c": None}

    def __init__(self, cfg: ClipCovConfig):
        super().__init__(cfg)
        self.ratio = float(cfg.ratio)
        self.seed, self.rank, self.draws = 0, 0, 0
        self.generator = torch.Generator(device="cpu")

    @property
    def clip_overrides(self) -> dict[str, Any]:
        return {**self.DEFAULT_CLIP, **self.cfg.loss}

    def _priorities(self, n: int, step: int, where: tuple[int, int, int], device) -> torch.Tensor:
        """One uniform key per candidate from the generator seeded for this (step, epoch, mini, micro, rank)."""
        self.generator.manual_seed(draw_seed(self.seed, step, *where, self.rank))
        self.draws += 1
        return torch.rand(n, generator=self.generator).to(device)  # [n]

    def _select(self, cov, mask, clipped, step, where, gather) -> tuple[torch.Tensor, dict[str, float]]:
        m = mask.bool()
        n_valid = int(gather(m.sum().reshape(1)).sum())
        cand = clip_cov_candidates(cov, mask, clipped, self.cfg.lb, self.cfg.ub)  # [n, T]
        keys = self._priorities(int(cand.sum()), step, where, cov.device)
        n_clip = select_count(self.ratio, n_valid)
        selected = select_by_priority(cand, keys, n_clip, gather)  # [n, T]
        with torch.no_grad():
            n_cand = int(gather(cand.sum().reshape(1)).sum())
            sel_cov = gather(cov[selected].float())
            n_sel = sel_cov.numel()
            metrics = {"ratio": self.ratio, "n_candidates": float(n_cand), "n_selected": float(n_sel),
                       "selected_frac": n_sel / n_valid if n_valid else 0.0,
                       "selected_cov_mean": float(sel_cov.mean()) if n_sel else 0.0}
        return selected, metrics

    @property
    def needs(self) -> TokenNeeds:
        return TokenNeeds(minibatch=("logprobs",)) if self.cfg.stats_scope == "mini_batch" else TokenNeeds()

    @property
    def reads_rollout_stats(self) -> bool:  # batch scope selects from the rollout log-probs
        return self.cfg.stats_scope == "batch"

    def prepare(self, batch: TrainBatch, ctx: StepContext) -> dict[str, float]:
        self.seed, self.rank = ctx.seed, ctx.rank
        self.ratio = self.cfg.ratio_schedule.value(self.cfg.ratio, ctx.step, ctx.total_steps)
        if self.cfg.stats_scope != "batch":
            return {"ratio": self.ratio}
        mask = batch.response_mask
        # rollout-policy log-probs (= current at the step start, so r = 1: no token is PPO-clipped yet)
        cov = batch_covariance(batch.old_logprobs, batch.advantages, mask, ctx.gather)  # [N, T]
        not_clipped = torch.zeros_like(mask, dtype=torch.bool)
        selected, metrics = self._select(cov, mask, not_clipped, ctx.step, (0, 0, 0), ctx.gather)
        batch.method[DETACH_KEY] = selected.float()  # [N, T]
        return metrics

    def prepare_minibatch(self, mini: TrainBatch, current: dict[str, torch.Tensor], ctx: StepContext,
                          where: tuple[int, int]) -> dict[str, float]:
        if self.cfg.stats_scope != "mini_batch":
            return {}
        lp, mask = current["logprobs"], mini.response_mask  # [n, T] current policy, no grad
        cov = batch_covariance(lp, mini.advantages, mask, ctx.gather)  # [n, T], means over the mini-batch
        spec = ctx.clip if ctx.clip is not None else ClipSpec(**self.clip_overrides)
        _, info = clipped_token_loss(lp, mini.old_logprobs, mini.advantages, spec)
        selected, metrics = self._select(cov, mask, info["clipped"], ctx.step, (*where, 0), ctx.gather)
        mini.method[DETACH_KEY] = selected.float()  # [n, T]
        return metrics

    def loss(self, mb: PolicyBatch) -> MethodOutput:
        metrics: dict[str, float] = {}
        if self.cfg.stats_scope in ("batch", "mini_batch"):
            selected = mb.method[DETACH_KEY].bool()
        else:  # verl: C from the current (detached) log-probs of this micro-batch on this rank
            lp = mb.logprobs.detach()
            cov = token_covariance(lp, mb.advantages, mb.response_mask)  # [n, T]
            spec = mb.clip if mb.clip is not None else ClipSpec(**self.clip_overrides)
            _, info = clipped_token_loss(lp, mb.old_logprobs, mb.advantages, spec)
            selected, metrics = self._select(
                cov, mb.response_mask, info["clipped"], mb.step, mb.microbatch_index, lambda x: x)
        n_valid = float(mb.response_mask.sum())
        # verl's compute_policy_loss_clip_cov returns |S|/N as pg_clipfrac and no lower clip fraction
        ref = {"actor/pg_clipfrac": float(selected.sum()) / n_valid if n_valid else 0.0, "actor/pg_clipfrac_lower": 0.0}
        return MethodOutput(token_weights=clip_cov_weights(selected), metrics=metrics, reference_metrics=ref)

    def state_dict(self) -> dict[str, Any]:
        # the generator is re-seeded before every draw from (seed, step, position), so a resumed run
        # draws the same subsets; the state is saved so that a checkpoint records where it stood
        return {"generator": self.generator.get_state(), "draws": self.draws, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self.draws, self.seed = int(state.get("draws", 0)), int(state.get("seed", self.seed))

