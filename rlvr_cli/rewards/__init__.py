"""Verifiable rewards for math RL: answer extraction, a timeout-safe grader, and reward functions."""

from rlvr_cli.rewards.extract import MODES, PRESETS, VALID_MODES, extract_answer, resolve_modes
from collections.abc import Mapping
from typing import Any

from rlvr_cli.errors import UserError
from rlvr_cli.rewards.countdown import CountdownGrader
from rlvr_cli.rewards.grader import STATUSES, Grade, MathGrader, answers_equivalent

VERIFIERS = {"math": MathGrader, "countdown": CountdownGrader}
"""``reward.verifier`` names: math answers (fast path + math-verify) or Countdown expressions."""


def build_grader(reward: Mapping[str, Any], verifier: str | None = None) -> MathGrader | CountdownGrader:
    """The grader of a resolved ``reward`` node; ``verifier`` (a benchmark's own) overrides ``reward.verifier``."""
    name = verifier or reward.get("verifier") or "math"
    if name not in VERIFIERS:
        raise UserError(f"unknown verifier {name!r}; valid: {', '.join(VERIFIERS)}")
    return VERIFIERS[name].from_config(reward)

__all__ = [
    "MODES",
    "PRESETS",
    "STATUSES",
    "VALID_MODES",
    "VERIFIERS",
    "CountdownGrader",
    "Grade",
    "MathGrader",
    "answers_equivalent",
    "build_grader",
    "extract_answer",
    "resolve_modes",
]
