"""Verifiable rewards for math RL: answer extraction, a timeout-safe grader, and reward functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rlvr_cli.errors import UserError
from rlvr_cli.rewards.countdown import CountdownGrader
from rlvr_cli.rewards.extract import MODES, PRESETS, VALID_MODES, extract_answer, resolve_modes
from rlvr_cli.rewards.fast import DEFAULT_REL_TOL
from rlvr_cli.rewards.grader import STATUSES, Grade, MathGrader, answers_equivalent
from rlvr_cli.typed import load, setting

VERIFIERS = {"math": MathGrader, "countdown": CountdownGrader}
"""``reward.verifier`` names: math answers (fast path + math-verify) or Countdown expressions."""
VERIFIER_NAMES = tuple(VERIFIERS)


def extract_ok(v: Any) -> bool:
    """An extraction mode or preset, or a non-empty list of them (tried in order)."""
    if isinstance(v, str):
        return v in VALID_MODES
    return isinstance(v, list) and bool(v) and all(isinstance(x, str) and x in VALID_MODES for x in v)


EXTRACT_EXPECT = f"one of {' | '.join(VALID_MODES)}, or a list of them (tried in order)"
EXTRACT_HELP = ("answer extraction (rewards/extract.py): a mode, a preset (auto | strict | gsm8k) or a list "
                "tried in order")


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """``reward.*``: who grades an answer and how (``build_grader``), in ``rlvr train`` and ``rlvr eval``."""

    extract: str | list[str] = setting("auto", check=extract_ok, expect=EXTRACT_EXPECT, help=EXTRACT_HELP)
    verifier: Literal[VERIFIER_NAMES] = setting("math", help="math (the answer equals the gold one: fast path "
                                                "+ math-verify) | countdown (an expression reaches the target)")
    rel_tol: float = setting(DEFAULT_REL_TOL, ge=0, lt=1, why="relative tolerance when one side is a decimal",
                             help="relative tolerance when one side is a decimal (0.333 != 1/3)")
    timeout_s: float = setting(5.0, gt=0, why="seconds per answer comparison", help="wall-clock limit per "
                               "answer comparison; a worker that overruns is killed (the answer is wrong)")
    num_workers: int = setting(2, ge=1, help="grader worker processes")


def build_grader(reward: RewardConfig | Mapping[str, Any], verifier: str | None = None) -> MathGrader | CountdownGrader:
    """The grader of a ``reward`` node; ``verifier`` (a benchmark's own) overrides ``reward.verifier``."""
    reward = load(RewardConfig, reward, "reward.")
    name = verifier or reward.verifier
    if name not in VERIFIERS:
        raise UserError(f"unknown verifier {name!r}; valid: {', '.join(VERIFIERS)}")
    return VERIFIERS[name].from_config(reward)


__all__ = [
    "MODES",
    "PRESETS",
    "STATUSES",
    "VALID_MODES",
    "VERIFIERS",
    "VERIFIER_NAMES",
    "RewardConfig",
    "CountdownGrader",
    "Grade",
    "MathGrader",
    "answers_equivalent",
    "build_grader",
    "extract_answer",
    "resolve_modes",
]
