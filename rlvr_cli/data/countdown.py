"""Countdown: reach a target from given numbers with + − × ÷ (the entropy lab's task).

As TinyZero's R1-Zero-style Countdown task (Pan et al. 2025, ``examples/data_preprocess/countdown.py``):
every number is used exactly once, any bracketing is allowed. Unlike the chained arithmetic of
``synthetic.py`` a problem has many valid answers, so sampling entropy means exploration::

    problem:  "Using the numbers 3, 4, 6, each exactly once, with + - * /, make 18."
    solution: "6-3=3. 3*4=12. \\boxed{(6-3)*4}"   (one valid solution, drawn at random)
    answer:   '{"target": 18, "numbers": [3, 4, 6]}'

The gold answer is the problem itself as JSON (verl's ``ground_truth`` dict in TinyZero), since any
expression that reaches the target counts; ``rewards/countdown.py`` grades it with a small parser.

The worked solution combines two numbers per step (``a op b = c.``, written without spaces: ``6-3=3.``,
so that the tokens a Qwen2 tokenizer spends on spaces do not dilute the choices), every intermediate a
non-negative integer, and ends with the whole expression in ``\\boxed{}``. ``solutions`` lists every such
path, so a warm start can draw a fresh one per example and learn the spread over solutions. Pure and
deterministic; train and test are split by a stable hash of the problem text (as ``synthetic.py``).
"""
from __future__ import annotations

import hashlib
import json
import random
from functools import lru_cache

from rlvr_cli.data.splits import SPLITS, split_of

OPS = ("+", "-", "*", "/")


def gold(target: int, numbers: list[int]) -> str:
    """The gold answer string of a problem (what ``rewards.countdown.parse_gold`` reads)."""
    return json.dumps({"target": int(target), "numbers": [int(n) for n in numbers]})


def problem_text(numbers: list[int], target: int) -> str:
    return f"Using the numbers {', '.join(map(str, numbers))}, each exactly once, with + - * /, make {target}."


def _combine(a: int, b: int) -> list[tuple[str, int]]:
    """Every ``a op b`` (in this order) whose result is a non-negative integer."""
    out = [("+", a + b), ("*", a * b)]
    if a >= b:
        out.append(("-", a - b))
    if b and a % b == 0:
        out.append(("/", a // b))
    return out


def _walk(numbers: tuple[int, ...], target: int, commute: bool) -> list[str]:
    """Every path to ``target``, each written with every boxed form of its expression.

    A state is a list of (value, its expression's forms) items; a step replaces two of them by ``a op b``
    (ordered pairs, so ``4 + 6`` and ``6 + 4`` are different paths). ``commute``: a ``+`` or ``*`` step's
    forms also hold its operands swapped; otherwise every item has one form."""
    found: list[str] = []

    def walk(items: list[tuple[int, tuple[str, ...]]], steps: list[str]) -> None:
        if len(items) == 1:
            if items[0][0] == target:
                found.extend(" ".join(steps) + f" \\boxed{{{e}}}" for e in items[0][1])
            return
        for i in range(len(items)):
            for j in range(len(items)):
                if i == j:
                    continue
                (a, ea), (b, eb) = items[i], items[j]
                rest = [items[k] for k in range(len(items)) if k not in (i, j)]
                for op, c in _combine(a, b):
                    forms = {f"{_wrap(x)}{op}{_wrap(y)}" for x in ea for y in eb}
                    if commute and op in "+*":
                        forms |= {f"{_wrap(y)}{op}{_wrap(x)}" for x in ea for y in eb}
                    walk(rest + [(c, tuple(sorted(forms)))], steps + [f"{a}{op}{b}={c}."])

    walk([(n, (str(n),)) for n in numbers], [])
    return found


@lru_cache(maxsize=65536)
def solutions(numbers: tuple[int, ...], target: int) -> tuple[str, ...]:
    """Every step-by-step solution (``"a+b=c. ... \\boxed{expr}"``) of the problem, in a fixed order.

    Ordered pairs, so ``4 + 6`` and ``6 + 4`` are different paths; both are valid answers. Exhaustive: with
    n numbers there are at most ``prod_{k=2..n} k (k-1) * 4`` paths (576 for four numbers)."""
    return tuple(_walk(numbers, target, commute=False))


@lru_cache(maxsize=65536)
def solution_forms(numbers: tuple[int, ...], target: int) -> tuple[str, ...]:
    """Every written form of every solution: each path of ``solutions`` with each boxed expression that
    reorders the operands of its ``+`` and ``*`` (``\\boxed{9+(4+3)}``, ``\\boxed{(4+3)+9}``,
    ``\\boxed{(3+4)+9}``, ...), in a fixed order.

    The entropy lab's warm start draws from these, so the policy meets genuinely ambiguous next steps
    with balanced frequencies inside the answer too (a real reasoning model's forks: Wang et al.,
    arXiv 2506.01939), not only in the choice of the first step."""
    return tuple(dict.fromkeys(_walk(numbers, target, commute=True)))


def _wrap(expr: str) -> str:
    return expr if expr.isdigit() else f"({expr})"


def make_countdown_problem(rng: random.Random, n_numbers: int, max_number: int, max_target: int) -> tuple[list[int], int]:
    """Draw numbers (uniform in ``[1, max_number]``) and a target in ``[1, max_target]`` that one random
    path over all of them reaches (so every problem has at least one solution)."""
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        items = list(numbers)
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            op, c = rng.choice(_combine(items[i], items[j]))
            items = [items[k] for k in range(len(items)) if k not in (i, j)] + [c]
        if 1 <= items[0] <= max_target:
            return numbers, items[0]


def _stream_seed(seed: int, *params: int) -> int:
    key = "rlvr-countdown|" + "|".join(map(str, (seed, *params)))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def countdown_split(
    split: str,
    n: int,
    seed: int = 0,
    min_numbers: int = 3,
    max_numbers: int = 3,
    max_number: int = 9,
    max_target: int = 40,
) -> list[dict]:
    """``n`` distinct problems of one split: rows ``{"id", "problem", "answer", "solution", "n_solutions"}``.

    ``solution`` is one valid path drawn with the split's own stream (a warm start may draw others from
    ``solutions``). Deterministic; a smaller ``n`` gives a prefix of a larger one; train and test never
    share a problem text. Raises ``ValueError`` if the parameters cannot give ``n`` distinct problems."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 2 <= min_numbers <= max_numbers <= 4:
        raise ValueError(f"need 2 <= min_numbers <= max_numbers <= 4, got {min_numbers}, {max_numbers}")
    if max_number < 2 or max_target < 1:
        raise ValueError(f"need max_number >= 2 and max_target >= 1, got {max_number}, {max_target}")
    rng = random.Random(_stream_seed(seed, min_numbers, max_numbers, max_number, max_target))
    rows: list[dict] = []
    seen: set[str] = set()
    draws, max_draws = 0, 200 * n + 10_000
    while len(rows) < n:
        if draws >= max_draws:
            raise ValueError(f"could only find {len(rows)} distinct {split} countdown problems out of {n} requested")
        draws += 1
        numbers, target = make_countdown_problem(rng, rng.randint(min_numbers, max_numbers), max_number, max_target)
        text = problem_text(numbers, target)
        if text in seen or split_of(text) != split:
            continue
        seen.add(text)
        paths = solutions(tuple(numbers), target)
        rows.append({"id": f"countdown-{split}-{len(rows):05d}", "problem": text, "answer": gold(target, numbers),
                     "solution": rng.choice(paths), "n_solutions": len(paths)})
    return rows
