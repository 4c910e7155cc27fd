"""Verifiable math reward: is the model's final answer equal to the gold answer?

Grading happens in three tiers, cheapest first:

1. **Extraction** (``extract.py``): no final answer -> ``no_answer``.
2. **Fast path** (``fast.py``), in the calling process: identical text, multiple-choice letters,
   plain numbers (exact, or within ``rel_tol`` when one side is a decimal), mixed numbers, number
   words, clock times and "no solution" phrases.  Most of a GRPO batch is settled here in
   microseconds with no sympy involved.
3. **math-verify** (``symbolic.py``: rewrites, ``parse`` + ``verify``, complex ``i``, decimals
   against closed forms) for everything else.  This runs in **worker processes** (``pool.py``)
   under a wall-clock deadline, never in the caller.

:class:`MathGrader` is the public face: :meth:`~MathGrader.grade` (responses, extraction first),
:meth:`~MathGrader.compare` (answers already extracted, same pool and timeouts),
:meth:`~MathGrader.grade_async` (the same, in a background thread, so grading overlaps GPU work)
and :meth:`~MathGrader.clusters` (answers that are equal vote together in maj@k).
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlvr_cli.rewards.extract import check_mode, extract_answer
from rlvr_cli.rewards.fast import DEFAULT_REL_TOL, as_number, fast_compare, vote_key
from rlvr_cli.rewards.pool import CRASH_TOKEN, HANG_TOKEN, TEST_HOOK_ENV, _WorkerPool
from rlvr_cli.rewards.symbolic import symbolic_status

__all__ = [
    "CRASH_TOKEN", "DEFAULT_REL_TOL", "HANG_TOKEN", "STATUSES", "TEST_HOOK_ENV", "Grade", "MathGrader", "ResponseGrader",
    "answers_equivalent", "as_number", "fast_compare",
]

STATUSES: tuple[str, ...] = ("correct", "wrong", "no_answer", "parse_error", "timeout")

# maj@k clustering compares each distinct answer with the representatives of the clusters so far;
# at most this many distinct answers per problem are clustered (the most frequent ones), the rest
# vote by their text, so the cost is at most cap * (cap - 1) / 2 comparisons per problem.
DEFAULT_VOTE_CAP = 16


@dataclass(frozen=True)
class Grade:
    """The verdict on one response."""

    score: float  # 1.0 correct, 0.0 otherwise
    extracted: str | None  # the extracted answer string (None if nothing extracted)
    status: str  # one of STATUSES

    @classmethod
    def from_status(cls, status: str, extracted: str | None) -> Grade:
        return cls(1.0 if status == "correct" else 0.0, extracted, status)


def answers_equivalent(pred: str, gold: str, rel_tol: float = DEFAULT_REL_TOL) -> bool:
    """In-process comparison (no timeout protection): fast path, then math-verify.  Parse errors
    count as not equivalent.  For model output use :meth:`MathGrader.compare`, which has a deadline."""
    fast = fast_compare(pred, gold, rel_tol)
    if fast is not None:
        return fast
    return symbolic_status(pred, gold, rel_tol) == "correct"


class ResponseGrader:
    """What the trainer and ``rlvr eval`` call on a verifier: :meth:`grade` (responses, extraction first),
    :meth:`grade_async`, and, per verifier, :meth:`compare` (extracted answers) and :meth:`clusters` (maj@k
    labels).  ``extract``: the extraction mode(s); ``counts``: running totals of statuses."""

    extract: str | list[str]
    counts: collections.Counter[str]
    _executor: concurrent.futures.ThreadPoolExecutor | None = None

    def compare(self, predictions: Sequence[str | None], answers: Sequence[str]) -> list[Grade]:
        raise NotImplementedError

    def clusters(self, groups: Sequence[Sequence[str | None]], cap: int = DEFAULT_VOTE_CAP) -> list[list[int | None]]:
        raise NotImplementedError

    def grade(
        self, responses: Sequence[str], answers: Sequence[str], extract: str | Sequence[str] | None = None
    ) -> list[Grade]:
        """Grade ``responses[i]`` against ``answers[i]``; returns one :class:`Grade` each.
        ``extract`` overrides the grader's extraction for this call (e.g. per benchmark)."""
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        mode = self.extract if extract is None else extract
        check_mode(mode)
        return self.compare([extract_answer(response, mode) for response in responses], answers)

    def grade_one(self, response: str, answer: str) -> Grade:
        return self.grade([response], [answer])[0]

    def grade_async(
        self, responses: Sequence[str], answers: Sequence[str], extract: str | Sequence[str] | None = None
    ) -> concurrent.futures.Future[list[Grade]]:
        """:meth:`grade` in a background thread; ``.result()`` gives the grades.

        Grading is CPU work in other processes (and a little in this one); the trainer starts it
        and runs the no-grad scoring forward on the accelerator while the workers compare."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rlvr-grader")
        return self._executor.submit(self.grade, list(responses), list(answers), extract)

    def close(self) -> None:
        """Stop the background thread (and, per verifier, its workers).  Idempotent."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MathGrader(ResponseGrader):
    """Grades batches of responses against gold answers; see the module docstring.

    ``extract``: extraction mode, preset or list of modes (see :func:`extract_answer`).
    ``timeout_s``: wall-clock limit per math-verify comparison.  ``num_workers``: worker processes,
    started on first need.  ``rel_tol``: relative tolerance when one side is a decimal.
    ``start_method``: multiprocessing start method (``None``: the platform default; any works).

    Use as a context manager or call :meth:`close`; workers are also stopped when the grader is
    garbage-collected or the interpreter exits.  ``counts`` holds running totals of statuses.
    """

    def __init__(
        self,
        extract: str | Sequence[str] = "auto",
        timeout_s: float = 5.0,
        num_workers: int = 2,
        *,
        rel_tol: float = DEFAULT_REL_TOL,
        start_method: str | None = None,
    ) -> None:
        check_mode(extract)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if not 0 <= rel_tol < 1:
            raise ValueError(f"rel_tol must be in [0, 1), got {rel_tol}")
        self.extract = extract if isinstance(extract, str) else list(extract)
        self.timeout_s = timeout_s
        self.num_workers = num_workers
        self.rel_tol = rel_tol
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._pool = _WorkerPool(num_workers, timeout_s, start_method, rel_tol)
        # finalize holds the pool, not self, so the grader can still be garbage-collected; it
        # runs at most once: on close(), on garbage collection, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _WorkerPool.close, self._pool)

    @classmethod
    def from_config(cls, reward: Any) -> MathGrader:
        """From a ``rewards.RewardConfig`` node (``reward.*`` of ``rlvr train`` and ``rlvr eval``)."""
        return cls(reward.extract, reward.timeout_s, reward.num_workers, rel_tol=reward.rel_tol)

    # ------------------------------------------------------------------------------------ grading
    def compare(self, predictions: Sequence[str | None], answers: Sequence[str]) -> list[Grade]:
        """Grade answers that are already extracted (``None``: no answer) against gold answers,
        through the same fast path, worker pool and timeouts as :meth:`grade`."""
        if len(predictions) != len(answers):
            raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("MathGrader is closed")
            grades = self._compare_locked(predictions, answers)
            self.counts.update(grade.status for grade in grades)
        return grades

    def equal_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each ``(a, b)`` is equivalent (``b`` in the gold role), under the timeouts."""
        return [g.status == "correct" for g in self.compare([a for a, _ in pairs], [b for _, b in pairs])]

    def clusters(self, groups: Sequence[Sequence[str | None]], cap: int = DEFAULT_VOTE_CAP) -> list[list[int | None]]:
        """Cluster labels for the answers of each group (problem): equal answers share a label.

        ``\\dfrac{\\sqrt{3}}{2}``, ``\\frac{\\sqrt3}{2}`` and ``\\frac{\\sqrt{3}}{2}`` get one label.  Greedy,
        in order of frequency (ties: first seen): each distinct answer joins the first earlier
        cluster whose representative it equals, else starts one.  Answers are first grouped by their
        spelling-level key (``vote_key``); only the ``cap`` most frequent keys of a problem are
        compared, in rounds batched over all problems, each comparison under the grader's timeout
        (a timeout counts as "not equal").  ``None`` (no answer) gets the label ``None``.
        """
        keyed = [[vote_key(a) if a else None for a in group] for group in groups]
        text: list[dict[str, str]] = [{} for _ in groups]  # key -> its first spelling
        for g, (keys, group) in enumerate(zip(keyed, groups)):
            for key, answer in zip(keys, group):
                if key is not None:
                    text[g].setdefault(key, answer)
        # most frequent first; a Counter keeps first-seen order and the sort is stable, so ties go to
        # the answer seen first
        orders = [sorted(counts, key=lambda k, c=counts: -c[k])
                  for counts in (collections.Counter(k for k in keys if k is not None) for keys in keyed)]
        reps: list[list[str]] = [[] for _ in groups]  # representative keys, in cluster order
        label: list[dict[str, int]] = [{} for _ in groups]
        for rank in range(max((len(o) for o in orders), default=0)):
            jobs, where = [], []
            for g, order in enumerate(orders):
                if rank >= len(order):
                    continue
                key = order[rank]
                if rank >= cap or not reps[g]:
                    label[g][key] = len(reps[g])
                    reps[g].append(key)
                    continue
                for c, rep in enumerate(reps[g]):
                    jobs.append((text[g][key], text[g][rep]))
                    where.append((g, key, c))
            if not jobs:
                continue
            same = self.equal_pairs(jobs)
            for g, key, c in (w for w, ok in zip(where, same) if ok):
                label[g].setdefault(key, c)
            for g, order in enumerate(orders):
                if rank < len(order) and order[rank] not in label[g]:
                    label[g][order[rank]] = len(reps[g])
                    reps[g].append(order[rank])
        return [[None if k is None else label[g][k] for k in keys] for g, keys in enumerate(keyed)]

    # ------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the worker processes (and the background thread).  Idempotent."""
        super().close()
        with self._lock:
            self._finalizer()

    def _compare_locked(self, predictions: Sequence[str | None], answers: Sequence[str]) -> list[Grade]:
        grades: list[Grade | None] = [None] * len(predictions)
        slow: dict[tuple[str, str], list[int]] = {}  # identical pairs are compared once
        for index, (extracted, answer) in enumerate(zip(predictions, answers)):
            if extracted is None:
                grades[index] = Grade.from_status("no_answer", None)
                continue
            fast = fast_compare(extracted, str(answer), self.rel_tol)
            if fast is None:
                slow.setdefault((extracted, str(answer)), []).append(index)
            else:
                grades[index] = Grade.from_status("correct" if fast else "wrong", extracted)
        if slow:
            statuses = self._pool.run(list(slow))
            for pair, status in zip(slow, statuses):
                for index in slow[pair]:
                    grades[index] = Grade.from_status(status, pair[0])
        return grades  # type: ignore[return-value]
