"""Accuracy metrics over n samples per problem (pure functions)."""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 (Codex, eq. 1): 1 − C(n−c, k) / C(n, k), for k ≤ n.

    ``n`` samples of which ``c`` are correct. This is the expectation over all size-k subsets, not the
    biased "best of the first k" bootstrap.
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    # numerically stable product form of 1 - C(n-c,k)/C(n,k)
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _norm(answer: str) -> str:
    return re.sub(r"\s+", "", answer).rstrip(".")


def majority_vote(extracted: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@n: the most frequent extracted answer (whitespace-insensitive; ties -> earliest) decides.

    Samples with no extracted answer do not vote. Equivalent answers written differently (1/2 vs 0.5)
    vote separately: a known simplification against math-verify clustering.
    """
    votes = Counter(_norm(a) for a in extracted if a)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(_norm(a) for a in extracted if a and votes[_norm(a)] == top)
    return any(ok for a, ok in zip(extracted, correct) if a and _norm(a) == winner)


def pass_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... ≤ n, plus n itself."""
    ks = [2**i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    return sorted(set(ks + [n]))


def summarize_samples(samples: Sequence[Any], n: int) -> dict[str, float]:
    """``samples``: records with ``problem_id``, ``correct``, ``extracted``, ``length``, ``truncated``,
    ``status``. Returns avg@n, pass@k for k = 1, 2, 4, … ≤ n, maj@n, mean length, truncation and timeouts."""
    by_problem: dict[str, list[Any]] = {}
    for s in samples:
        by_problem.setdefault(s.problem_id, []).append(s)
    if not by_problem:
        return {}
    out: dict[str, float] = {f"avg@{n}": sum(s.correct for s in samples) / len(samples)}
    for k in pass_ks(n):
        out[f"pass@{k}"] = sum(pass_at_k(len(g), sum(s.correct for s in g), k) for g in by_problem.values()) / len(by_problem)
    out[f"maj@{n}"] = sum(majority_vote([s.extracted for s in g], [s.correct for s in g]) for g in by_problem.values()) / len(by_problem)
    out["response_len_mean"] = sum(s.length for s in samples) / len(samples)
    out["truncated_frac"] = sum(s.truncated for s in samples) / len(samples)
    out["grader_timeouts"] = float(sum(s.status == "timeout" for s in samples))
    out["no_answer_frac"] = sum(s.status == "no_answer" for s in samples) / len(samples)
    out["problems"] = float(len(by_problem))
    return out
