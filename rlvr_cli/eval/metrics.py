"""Accuracy metrics over n samples per problem (pure functions)."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rlvr_cli.rewards.fast import vote_key


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 (Codex, eq. 1): 1 − C(n−c, k) / C(n, k), for 1 ≤ k ≤ n.

    ``n`` samples of which ``c`` are correct. This is the expectation over all size-k subsets, not the
    biased "best of the first k" bootstrap.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    # numerically stable product form of 1 - C(n-c,k)/C(n,k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i)
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_vote(extracted: Sequence[str | None], correct: Sequence[bool], labels: Sequence[Any] | None = None) -> bool:
    """maj@n: the most frequent extracted answer decides; ties go to the answer that appeared first.
    Samples with no extracted answer do not vote; if none has one, maj@n is 0.

    Answers vote together when they share a label: ``labels`` (the grader's equivalence clusters,
    :meth:`MathGrader.clusters`: ``\\sqrt{12}`` and ``2\\sqrt{3}`` are one vote), else :func:`vote_key`.
    The winner is correct if any of its voters was graded correct.
    """
    keys = list(labels) if labels is not None else [vote_key(a) if a else None for a in extracted]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(k for k in keys if k is not None and votes[k] == top)
    return any(ok for k, ok in zip(keys, correct) if k == winner)


def pass_ks(n: int) -> list[int]:
    """k = 1, 2, 4, ... ≤ n, plus n itself (pass@n = at least one correct)."""
    ks = [2**i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    return sorted(set(ks + [n])) if n >= 1 else []


def summarize_samples(samples: Sequence[Any], n: int, grader: Any = None) -> dict[str, float]:
    """``samples``: records with ``problem_id``, ``correct``, ``extracted``, ``length``, ``truncated``,
    ``status``. Returns avg@n, pass@k for k = 1, 2, 4, … ≤ n, maj@n, mean length, truncation and timeouts.
    With a ``grader``, maj@n votes by equivalence (its ``clusters``), else by :func:`vote_key`."""
    by_problem: dict[str, list[Any]] = {}
    for s in samples:
        by_problem.setdefault(s.problem_id, []).append(s)
    if not by_problem:
        return {}
    out: dict[str, float] = {f"avg@{n}": sum(s.correct for s in samples) / len(samples)}
    for k in pass_ks(n):
        out[f"pass@{k}"] = sum(pass_at_k(len(g), sum(s.correct for s in g), k) for g in by_problem.values()) / len(by_problem)
    groups = list(by_problem.values())
    labels = grader.clusters([[s.extracted for s in g] for g in groups]) if grader is not None else [None] * len(groups)
    out[f"maj@{n}"] = sum(majority_vote([s.extracted for s in g], [s.correct for s in g], lab)
                          for g, lab in zip(groups, labels)) / len(groups)
    out["response_len_mean"] = sum(s.length for s in samples) / len(samples)
    out["truncated_frac"] = sum(s.truncated for s in samples) / len(samples)
    out["grader_timeouts"] = float(sum(s.status == "timeout" for s in samples))
    out["no_answer_frac"] = sum(s.status == "no_answer" for s in samples) / len(samples)
    out["problems"] = float(len(by_problem))
    return out
