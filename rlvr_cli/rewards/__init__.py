"""Verifiable rewards for math RL: answer extraction and a timeout-safe math-verify grader."""

from rlvr_cli.rewards.extract import VALID_MODES, extract_answer
from rlvr_cli.rewards.grader import STATUSES, Grade, MathGrader, answers_equivalent

__all__ = [
    "STATUSES",
    "VALID_MODES",
    "Grade",
    "MathGrader",
    "answers_equivalent",
    "extract_answer",
]
