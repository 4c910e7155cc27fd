"""Annealing schedules for a method's strength λ_t (entropy coefficient, Clip-Cov ratio, KL-Cov β / ratio).

Motivation: Baehr & Lei, arXiv 2604.09676 — a dense entropy bonus biases the optimum for good, while
covariance-based regularisation (Clip-Cov / KL-Cov) is asymptotically unbiased once its coefficient is
annealed to 0. The paper gives no concrete schedule, so the forms below are ours (spec
methods-grpo-cov.md §11):

    u = clip((t − t_w) / (T − t_w), 0, 1)
    constant   λ_0
    linear     λ_end + (λ_0 − λ_end)(1 − u)
    cosine     λ_end + ½(λ_0 − λ_end)(1 + cos πu)
    inv_sqrt   λ_0 / sqrt(1 + max(0, t − t_w)/τ)
    exp        λ_0 · γ^max(0, t − t_w)

``t`` is the 1-based training step (``StepContext.step``), so with ``linear``/``cosine`` the last step
of the run is exactly at λ_end [ours]. A *ratio* annealed to exactly 0 switches the method off (the
``max(floor(ratio·N), 1)`` floor is bypassed, see ``select_count``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from rlvr_cli.typed import setting

SCHEDULES = ("constant", "linear", "cosine", "inv_sqrt", "exp")


def schedule_value(
    kind: str, start: float, t: float, total: float, end: float = 0.0, hold: float = 0.0,
    tau: float = 1.0, gamma: float = 0.99,
) -> float:
    """λ_t of the schedule ``kind`` (spec §11 table). ``hold`` = t_w and ``tau`` = τ are in steps."""
    if kind == "constant":
        return float(start)
    past_hold = max(0.0, t - hold)
    if kind in ("linear", "cosine"):
        span = total - hold
        u = min(1.0, past_hold / span) if span > 0 else float(t >= hold)
        if kind == "linear":
            return end + (start - end) * (1.0 - u)
        return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * u))
    if kind == "inv_sqrt":
        return start / math.sqrt(1.0 + past_hold / max(tau, 1e-12))
    if kind == "exp":
        return start * gamma ** past_hold
    raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


def select_count(ratio: float, n_valid: int) -> int:
    """Tokens a ratio selects: max(floor(ratio·N), 1) (Cui et al. §5, verl), but 0 when the (annealed)
    ratio is exactly 0 or there is no valid token — an annealed-off method selects nothing."""
    if ratio <= 0.0 or n_valid <= 0:
        return 0
    return min(n_valid, max(int(math.floor(ratio * n_valid)), 1))


@dataclass
class Schedule:
    """One annealed coefficient. ``kind: constant`` (default everywhere) keeps the paper's fixed value.

    end: λ_end; 0 is what the unbiasedness argument of arXiv 2604.09676 needs.
    hold_frac: t_w = hold_frac·T steps at full strength first (entropy collapses early, Cui et al. §3).
    tau_frac: τ = tau_frac·T for ``inv_sqrt``.
    gamma: per-step factor for ``exp``; null = reach 1% of λ_0 at the last step [ours].
    """

    kind: Literal[SCHEDULES] = setting("constant", help="constant (the paper's fixed value) | linear | cosine "
                                       "| inv_sqrt | exp")
    end: float = setting(0.0, help="λ_end for linear/cosine (0: asymptotically unbiased, arXiv 2604.09676)")
    hold_frac: float = setting(0.1, ge=0, le=1, help="hold full strength for hold_frac·max_steps steps first")
    tau_frac: float = setting(0.1, ge=0, help="τ = tau_frac·max_steps for inv_sqrt")
    gamma: float | None = setting(None, gt=0, help="per-step factor for exp; null: reach 1% of λ_0 at the last step")

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule kind {self.kind!r}; valid: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.hold_frac <= 1.0:
            raise ValueError(f"schedule hold_frac must be in [0, 1], got {self.hold_frac}")

    @classmethod
    def from_any(cls, node: Schedule | dict[str, Any] | str | None) -> Schedule:
        """A config node (dict, a bare kind name, or None = constant) -> Schedule; unknown keys list the valid ones."""
        if isinstance(node, Schedule):
            return node
        if node is None:
            return cls()
        if isinstance(node, str):
            return cls(kind=node)
        valid = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(node) - valid)
        if extra:
            raise ValueError(f"schedule has no option(s) {extra}; valid: {', '.join(sorted(valid))}")
        return cls(**node)

    def value(self, start: float, step: int, total_steps: int) -> float:
        """λ at training step ``step`` (1-based) of ``total_steps``."""
        total = max(1, int(total_steps))
        hold = self.hold_frac * total
        gamma = self.gamma if self.gamma is not None else 0.01 ** (1.0 / max(1.0, total - hold))
        return schedule_value(self.kind, start, float(step), float(total), self.end, hold,
                              max(self.tau_frac * total, 1e-12), gamma)
