"""Verifiable rewards for math RL: answer extraction, a timeout-safe grader, and reward functions."""

from rlvr_cli.rewards.extract import MODES, PRESETS, VALID_MODES, extract_answer, resolve_modes
from rlvr_cli.rewards.grader import STATUSES, Grade, MathGrader, answers_equivalent

__all__ = [
    "MODES",
    "PRESETS",
    "STATUSES",
    "VALID_MODES",
    "Grade",
    "MathGrader",
    "answers_equivalent",
    "extract_answer",
    "resolve_modes",
]
