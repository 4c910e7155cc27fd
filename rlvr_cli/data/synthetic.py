"""Synthetic, verifiable multi-step integer arithmetic (the project's embedded default task).

Problems are chained operations read left to right, so no operator precedence is involved::

    problem:  "Start with 7. Add 5, multiply by 3, subtract 4. What is the result?"
    solution: "7 + 5 = 12. 12 * 3 = 36. 36 - 4 = 32. \\boxed{32}"
    answer:   "32"

Design choices (so that a ~1M-parameter model can learn the task partially in a short SFT):

- operations: add ``1..max_operand``, subtract ``1..min(max_operand, current)`` (results never go
  negative), multiply by a single digit ``2..min(9, max_operand)`` (no division);
- every intermediate value, and so the answer, lies in ``[0, MAX_VALUE]``;
- the worked solution has one operation per step and ends with ``\\boxed{answer}``.

Everything here is pure and deterministic: no files, no global random state. Train and test are
disjoint because each problem is assigned to a split by a stable hash (SHA-256) of its text, so a
test problem can never occur in any train split, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import random

from rlvr_cli.data.splits import SPLITS, split_of

MAX_VALUE = 999
"""Upper bound of every intermediate value and answer (inclusive); all values are >= 0."""

MAX_MULTIPLIER = 9
"""Multiplications are by a single digit (2..9) so that they stay learnable for a tiny model."""


_VERB = {"+": "add {}", "-": "subtract {}", "*": "multiply by {}"}


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operation {op!r}")


def make_arith_problem(
    rng: random.Random, min_ops: int, max_ops: int, max_operand: int
) -> tuple[str, str, str]:
    """Draw one chained arithmetic problem -> ``(problem_text, answer_str, worked_solution_text)``.

    The number of operations is uniform in ``[min_ops, max_ops]``; the start value is uniform in
    ``[1, max_operand]``. Only ``rng`` is consumed, so the result is a function of its state.
    """
    if not (1 <= min_ops <= max_ops):
        raise ValueError(f"need 1 <= min_ops <= max_ops, got {min_ops}, {max_ops}")
    if max_operand < 2:
        raise ValueError(f"max_operand must be >= 2, got {max_operand}")
    if max_operand > MAX_VALUE:
        raise ValueError(f"max_operand must be <= {MAX_VALUE}, got {max_operand}")

    n_ops = rng.randint(min_ops, max_ops)
    value = rng.randint(1, max_operand)
    start = value
    phrases: list[str] = []
    steps: list[str] = []
    for _ in range(n_ops):
        allowed = []
        if value + 1 <= MAX_VALUE:
            allowed.append("+")
        if value >= 1:
            allowed.append("-")
        if value * 2 <= MAX_VALUE:
            allowed.append("*")
        op = rng.choice(allowed)
        if op == "+":
            operand = rng.randint(1, min(max_operand, MAX_VALUE - value))
        elif op == "-":
            operand = rng.randint(1, min(max_operand, value))
        else:
            hi = min(MAX_MULTIPLIER, max_operand, MAX_VALUE // value if value else MAX_MULTIPLIER)
            operand = rng.randint(2, hi)
        result = _apply(op, value, operand)
        phrases.append(_VERB[op].format(operand))
        steps.append(f"{value} {op} {operand} = {result}.")
        value = result

    body = ", ".join(phrases)
    problem = f"Start with {start}. {body[0].upper()}{body[1:]}. What is the result?"
    answer = str(value)
    solution = " ".join(steps) + f" \\boxed{{{answer}}}"
    return problem, answer, solution


def _stream_seed(seed: int, min_ops: int, max_ops: int, max_operand: int) -> int:
    key = f"rlvr-arith|{seed}|{min_ops}|{max_ops}|{max_operand}".encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def arith_split(
    split: str,
    n: int,
    seed: int = 0,
    min_ops: int = 2,
    max_ops: int = 3,
    max_operand: int = 20,
) -> list[dict]:
    """``n`` distinct problems of one split, as rows ``{"id", "problem", "answer", "solution"}``.

    Deterministic for ``(split, n, seed, min_ops, max_ops, max_operand)``; a smaller ``n`` gives a
    prefix of a larger one. Train and test never share a problem text (split by text hash).
    Raises ``ValueError`` if the parameters cannot produce ``n`` distinct problems.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(_stream_seed(seed, min_ops, max_ops, max_operand))
    rows: list[dict] = []
    seen: set[str] = set()
    max_draws = 200 * n + 10_000
    draws = 0
    while len(rows) < n:
        if draws >= max_draws:
            raise ValueError(
                f"could only find {len(rows)} distinct {split} problems out of {n} requested "
                f"(min_ops={min_ops}, max_ops={max_ops}, max_operand={max_operand})"
            )
        draws += 1
        problem, answer, solution = make_arith_problem(rng, min_ops, max_ops, max_operand)
        if problem in seen or split_of(problem) != split:
            continue
        seen.add(problem)
        rows.append(
            {
                "id": f"arith-{split}-{len(rows):05d}",
                "problem": problem,
                "answer": answer,
                "solution": solution,
            }
        )
    return rows


SYNTHETIC_TASKS = ("arith", "countdown")
"""``data.synthetic.task``: this module's chained arithmetic, or Countdown (``countdown.py``, the entropy lab)."""


def synthetic_split(split: str, n: int, task: str = "arith", **params) -> list[dict]:
    """``n`` rows of a generated task's split: ``arith_split`` or ``countdown.countdown_split`` (``params``: theirs)."""
    if task == "arith":
        return arith_split(split, n, **params)
    if task == "countdown":
        from rlvr_cli.data.countdown import countdown_split

        return countdown_split(split, n, **params)
    raise ValueError(f"unknown synthetic task {task!r}; valid: {', '.join(SYNTHETIC_TASKS)}")
