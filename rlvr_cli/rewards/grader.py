"""Verifiable math reward: is the model's final answer equal to the gold answer?

Grading happens in three tiers, cheapest first:

1. **Extraction** (``extract.py``): no final answer -> ``no_answer``.
2. **Fast path** (:func:`fast_compare`), in the calling process: identical text, multiple-choice
   letters, and plain numbers (``42``, ``1,000``, ``-0.5``, ``3/4``, ``\\frac{3}{4}``, ``025``,
   ``30^\\circ``, ``50\\%``, ``5 \\text{ cm}``) compared exactly with :class:`fractions.Fraction`.
   A GRPO step grades ~128 responses and most gold answers are integers, so this settles most of
   a batch in microseconds with no sympy involved.
3. **math-verify** (``parse`` + ``verify``, i.e. sympy) for everything else: radicals, ``\\pi``,
   intervals, sets, expressions.  This runs in **worker processes**, never in the caller.

Why processes and not threads: sympy can take minutes or never finish on odd inputs (towers of
powers, huge factorials, deeply nested expressions), and a Python thread cannot be stopped from
outside.  math-verify's own guard is ``signal.alarm``: whole seconds, main thread only, and it
cannot interrupt a long C-level call.  A process can always be killed.  So each slow comparison
gets a wall-clock deadline; a worker that overruns is SIGKILLed, reaped (no zombies), and
replaced the next time a worker is needed, and the item is graded ``timeout``.  math-verify's
signal timeouts are switched off (``parsing_timeout=None``, ``timeout_seconds=None``) because the
worker pool is the timeout mechanism.

Safety: model text is never given to ``eval``/``exec``.  Only math-verify's LaTeX extractor is used
(an ANTLR parser); its ``ExprExtractionConfig`` is deliberately not, because it hands text to
sympy's ``parse_expr``, which evaluates Python code.
"""

from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from math_verify import LatexExtractionConfig, parse, verify

from rlvr_cli.rewards.extract import check_mode, extract_answer, read_braced

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("correct", "wrong", "no_answer", "parse_error", "timeout")

# Test hooks, active only when this environment variable is "1" in the worker's environment:
# a prediction equal to HANG_TOKEN makes the worker sleep forever (a stand-in for a runaway sympy
# call), CRASH_TOKEN makes it die abruptly.  They let tests prove that runaways are killed.
TEST_HOOK_ENV = "RLVR_GRADER_TEST_HOOKS"
HANG_TOKEN = "__rlvr_test_hang__"
CRASH_TOKEN = "__rlvr_test_crash__"

# A worker must import sympy/math-verify and warm up before it is "ready"; that is not charged
# to any item's timeout, but a worker that never gets ready is an error, not a hang.
_STARTUP_TIMEOUT_S = 60.0
_JOIN_TIMEOUT_S = 5.0
_STOP_GRACE_S = 1.0

_WARM_UP = ((r"\frac{\sqrt{8}}{2}", r"\sqrt{2}"), (r"[1, \pi)", r"[1,\pi)"), ("x^2+1", "1+x^2"))

# LaTeX only, as a tuple (math-verify caches on it).  See the module docstring for why not Expr.
_MATH_VERIFY_CONFIG = (LatexExtractionConfig(),)


@dataclass(frozen=True)
class Grade:
    """The verdict on one response."""

    score: float  # 1.0 correct, 0.0 otherwise
    extracted: str | None  # the extracted answer string (None if nothing extracted)
    status: str  # one of STATUSES

    @classmethod
    def from_status(cls, status: str, extracted: str | None) -> Grade:
        return cls(1.0 if status == "correct" else 0.0, extracted, status)


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeouts are off; here that is intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


# --------------------------------------------------------------------------------------------
# Normalisation shared by the fast path and the math-verify path
# --------------------------------------------------------------------------------------------

# Unicode and TeX spellings of the same thing.  Macros get a trailing space so that "πr" does
# not become the unknown macro "\pir".
_SPELLINGS: tuple[tuple[str, str], ...] = (
    ("−", "-"), ("–", "-"), ("∞", r"\infty "), ("π", r"\pi "), ("×", r"\times "),
    ("·", r"\cdot "), ("≤", r"\le "), ("≥", r"\ge "), ("°", r"^\circ "),
    (r"\varnothing", r"\emptyset"), (r"\dfrac", r"\frac"), (r"\tfrac", r"\frac"),
    ("{,}", ","), (r"\!", ""),
)
# A TeX line break "\\\\" is matched first so that "\\\\ " is not misread as "\\" + "\\ ".
_THIN_SPACE = re.compile(r"\\\\|\\[,;: ]|~")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]"))
_BOX_COMMANDS = (r"\boxed", r"\fbox")
_TEXT_COMMANDS = (r"\text", r"\textrm", r"\textbf", r"\mbox", r"\mathrm", r"\mathbf")
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*percent\s*\}|percent)$")
_MATH_DOLLAR = re.compile(r"(?<!\\)\$")  # a "$" that is a math delimiter, not "\$"


def _canonical(answer: str) -> str:
    """Spelling-level clean-up that never changes the mathematical value of an answer."""
    text = str(answer).strip()
    for old, new in _SPELLINGS:
        text = text.replace(old, new)
    text = _THIN_SPACE.sub(_thin_space_to_blank, text).strip()
    text = _strip_math_delimiters(text)
    text = _unwrap_command(text, _BOX_COMMANDS)
    return text.rstrip(".").strip()


def _thin_space_to_blank(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0) == "\\\\" else " "


def _strip_math_delimiters(text: str) -> str:
    """``$x$`` -> ``x``, but ``$1$ and $2$`` stays as it is (two math spans, not one)."""
    for left, right in _MATH_DELIMITERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            inner = text[len(left):-len(right)]
            if left not in inner and right not in inner:
                return inner.strip()
    return text


def _unwrap_command(text: str, commands: Sequence[str]) -> str:
    """``\\cmd{X}`` -> ``X`` when the whole string is that one command; otherwise unchanged."""
    for command in commands:
        if not text.startswith(command):
            continue
        brace = len(command)
        while brace < len(text) and text[brace] == " ":
            brace += 1
        if brace < len(text) and text[brace] == "{":
            inner = read_braced(text, brace)
            if inner is not None and brace + len(inner) + 2 == len(text):
                return inner.strip()
    return text


# --------------------------------------------------------------------------------------------
# Fast path: exact comparison of plain numbers and multiple-choice letters
# --------------------------------------------------------------------------------------------

# Longer text is not "a plain number with decoration"; the cap also keeps the unanchored
# patterns below from going quadratic on a huge answer in the calling process.
_MAX_NUMBER_CHARS = 100
_VARIABLE_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")  # "x = 5"
_CURRENCY = re.compile(r"^\\?\$\s*")  # "\$5"
_DEGREES = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|\\degree)$")
_UNIT_IN_TEXT = re.compile(r"\s*\\(?:text|textrm|mbox|mathrm)\s*\{\s*([A-Za-z]{2,}[A-Za-z .]*)\}$")
_UNIT_WORDS = re.compile(r"\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)\.?$")
# In math mode "5 xy" is a product, so a bare two-letter word only counts as a known unit.
_SHORT_UNITS = frozenset({
    "cm", "mm", "km", "kg", "mg", "ml", "ft", "in", "yd", "mi", "hr", "oz", "lb", "am", "pm",
})
# Words that are mathematics or hedging, not units: "2 pi" and "5 or more" must not become a number.
_NOT_UNITS = frozenset({
    "pi", "e", "i", "inf", "infty", "infinity", "sqrt", "frac",
    "or", "and", "to", "plus", "minus", "times", "not", "than", "less", "more", "least", "most",
})

_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_SLASH_FRACTION = re.compile(r"([+-]?\d+)/([+-]?\d+)")
_TEX_FRACTION = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_TEX_FRACTION_SHORT = re.compile(r"([+-]?)\\frac(\d)(\d)")  # \frac12

_CHOICE = re.compile(r"\(?([A-E])\)?")
_CHOICE_PREDICTION = re.compile(r"\(?([A-Ea-e])\)?")
# "(B) 5", "B. 5", "B) 5", "\text{(B) } 5": a choice label followed by the option's content.
_CHOICE_LABEL = re.compile(
    r"(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?(?:\(([A-E])\)|([A-E])[.:)](?=\s|\}|$))"
)

_ANY_CHOICE = re.compile(r"(?<![A-Za-z\\])[A-E](?![A-Za-z])")


@dataclass(frozen=True)
class _Number:
    value: Fraction
    percent: bool  # written with a % sign


def fast_compare(pred: str, gold: str) -> bool | None:
    """Decide cheap cases exactly; ``None`` means "not decidable here, ask math-verify".

    Decides: identical text (after clean-up), multiple-choice letters when the gold is a letter
    A-E, and pairs of plain numbers.  Numbers are compared exactly, so ``0.333`` is not ``1/3``.
    """
    pred_text, gold_text = _canonical(pred), _canonical(gold)
    if pred_text and pred_text.replace(" ", "") == gold_text.replace(" ", ""):
        return True
    choice = _compare_choices(pred_text, gold_text)
    if choice is not None:
        return choice
    pred_number, gold_number = as_number(pred_text), as_number(gold_text)
    if pred_number is None or gold_number is None:
        return None
    return _numbers_match(pred_number, gold_number)


def as_number(text: str) -> _Number | None:
    """Read ``text`` as one plain rational number with optional decoration, else ``None``.

    Decoration that a human grader ignores is removed first: ``x =``, currency, a percent sign
    (remembered), degrees, a unit in words (``5 cm``, ``5 \\text{ apples}``), thousands
    separators, a leading ``+`` and leading zeros.
    """
    text = _canonical(text)
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    text = _VARIABLE_ASSIGNMENT.sub("", text, count=1)
    text = _unwrap_command(text, _TEXT_COMMANDS)
    text = _CURRENCY.sub("", text)
    percent = _PERCENT.search(text) is not None
    text = _DEGREES.sub("", _PERCENT.sub("", text))
    text = _strip_unit(text).replace(" ", "")
    value = _parse_rational(text)
    return None if value is None else _Number(value, percent)


def _strip_unit(text: str) -> str:
    """Remove a trailing unit: any words inside ``\\text{}``, or bare words of three or more
    letters (or a known two-letter unit), unless a word is mathematics or a hedge."""
    match = _UNIT_IN_TEXT.search(text)
    if match and _is_unit(match.group(1).split()):
        return text[:match.start()]
    match = _UNIT_WORDS.search(text)
    if match:
        words = match.group(1).split()
        if _is_unit(words) and all(len(w) > 2 or w.lower() in _SHORT_UNITS for w in words):
            return text[:match.start()]
    return text


def _is_unit(words: Sequence[str]) -> bool:
    return not _NOT_UNITS.intersection(word.lower() for word in words)


def _parse_rational(text: str) -> Fraction | None:
    try:
        if _DECIMAL.fullmatch(text):
            return Fraction(text.replace(",", ""))
        match = _SLASH_FRACTION.fullmatch(text)
        if match:
            return _ratio("", match.group(1), match.group(2))
        match = _TEX_FRACTION.fullmatch(text) or _TEX_FRACTION_SHORT.fullmatch(text)
        if match:
            return _ratio(*match.groups())
    except ValueError:  # e.g. more digits than int() accepts from a string
        return None
    return None


def _ratio(sign: str, numerator: str, denominator: str) -> Fraction | None:
    if int(denominator) == 0:
        return None
    value = Fraction(int(numerator), int(denominator))
    return -value if sign == "-" else value


def _numbers_match(pred: _Number, gold: _Number) -> bool:
    """Equal values; a percent sign on one side may also mean "divide by 100".

    Gold ``50\\%`` accepts ``50`` (sign omitted) and ``0.5`` (converted); gold ``0.12`` accepts
    ``12\\%``.  Without the question we cannot tell which reading was asked for, so both count.
    """
    if pred.value == gold.value:
        return True
    if pred.percent and not gold.percent:
        return pred.value / 100 == gold.value
    if gold.percent and not pred.percent:
        return gold.value / 100 == pred.value
    return False


def _compare_choices(pred: str, gold: str) -> bool | None:
    """When the gold is a choice letter A-E, compare the predicted letter (if there is one)."""
    gold_match = _CHOICE.fullmatch(_unwrap_command(gold, _TEXT_COMMANDS))
    if not gold_match:
        return None
    pred_letter = _prediction_letter(pred)
    return None if pred_letter is None else pred_letter == gold_match.group(1)


def _prediction_letter(pred: str) -> str | None:
    whole = _CHOICE_PREDICTION.fullmatch(_unwrap_command(pred, _TEXT_COMMANDS))
    if whole:
        return whole.group(1).upper()
    label = _CHOICE_LABEL.match(pred)
    if label and not _ANY_CHOICE.search(pred[label.end():]):
        return label.group(1) or label.group(2)
    return None  # no letter, or a hedge such as "(B) or (C)": left to math-verify


# --------------------------------------------------------------------------------------------
# math-verify path (runs in worker processes when called through MathGrader)
# --------------------------------------------------------------------------------------------


def _math_verify_text(answer: str) -> str:
    """Cleaned answer without a percent sign (math-verify fails to parse ``50\\%`` alone)."""
    return _PERCENT.sub("", _canonical(answer))


def _gold_document(gold: str) -> str:
    """Gold in ``$...$`` unless it already carries math delimiters or a box."""
    text = _math_verify_text(gold)
    return text if (_MATH_DOLLAR.search(text) or r"\boxed" in text) else f"${text}$"


def _prediction_document(pred: str) -> str:
    """Prediction in ``\\boxed{...}``: math-verify's highest-priority extraction pattern."""
    text = _math_verify_text(pred)
    return text if _MATH_DOLLAR.search(text) else f"\\boxed{{{text}}}"


def math_verify_status(pred: str, gold: str) -> str:
    """Compare with math-verify in this process: ``"correct"``, ``"wrong"`` or ``"parse_error"``.

    No timeout protection: call it from a process that may be killed.  An exception while parsing,
    or nothing parseable in either answer, is a ``parse_error``; an exception inside a single
    comparison is treated by math-verify as "not equal".
    """
    try:
        gold_parsed = parse(
            _gold_document(gold), extraction_config=_MATH_VERIFY_CONFIG,
            parsing_timeout=None, raise_on_error=True,
        )
        pred_parsed = parse(
            _prediction_document(pred), extraction_config=_MATH_VERIFY_CONFIG,
            parsing_timeout=None, raise_on_error=True,
        )
        if not gold_parsed or not pred_parsed:
            return "parse_error"
        # Argument order matters: verify(gold, target).
        same = verify(gold_parsed, pred_parsed, timeout_seconds=None)
    except Exception:  # noqa: BLE001 - any failure inside sympy is a grading failure, not a crash
        log.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return "parse_error"
    return "correct" if same else "wrong"


def answers_equivalent(pred: str, gold: str) -> bool:
    """In-process comparison (no timeout protection) used by the worker: fast exact path, then
    math-verify.  Parse errors count as not equivalent."""
    fast = fast_compare(pred, gold)
    if fast is not None:
        return fast
    return math_verify_status(pred, gold) == "correct"


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def _worker_main(
    conn: multiprocessing.connection.Connection, parent_end: multiprocessing.connection.Connection
) -> None:
    """Worker loop: receive ``(token, pred, gold)``, reply ``(token, status)``; ``None`` stops.

    SIGINT is ignored so that Ctrl-C in a terminal (sent to the whole process group) reaches only
    the parent, which then shuts the workers down itself.  If the parent dies, the pipe closes
    and ``recv`` raises, so orphaned workers exit on their own.  For that to happen the worker
    must not hold the parent's end of its own pipe, which a forked child inherits: close it.
    """
    parent_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for pred, gold in _WARM_UP:  # build the ANTLR parser and load sympy before "ready"
            math_verify_status(pred, gold)
        conn.send(("ready",))
        while True:
            message = conn.recv()
            if message is None:
                return
            token, pred, gold = message
            conn.send((token, _worker_compare(pred, gold)))
    except (EOFError, OSError):
        return


def _worker_compare(pred: str, gold: str) -> str:
    if os.environ.get(TEST_HOOK_ENV) == "1":
        _run_test_hook(pred)
    try:
        return math_verify_status(pred, gold)
    except Exception:  # noqa: BLE001 - defensive; math_verify_status already catches
        return "parse_error"


def _run_test_hook(pred: str) -> None:
    if pred == HANG_TOKEN:
        while True:
            time.sleep(3600)
    if pred == CRASH_TOKEN:
        os._exit(13)


class _Worker:
    """One worker process and the parent's end of its pipe.

    States: ``starting`` (importing / warming up), ``idle``, ``busy`` (one item in flight).
    ``deadline`` (monotonic seconds) applies while starting or busy.
    """

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_worker_main, args=(child_end, parent_end), name="rlvr-grader-worker",
            daemon=True,
        )
        self.process.start()
        # Close our copy of the child's end so that a dead worker shows up as EOF on parent_end.
        child_end.close()
        self.conn = parent_end
        self.pid = self.process.pid
        self.state = "starting"
        self.job: int | None = None
        self.token: int | None = None
        self.deadline = time.monotonic() + _STARTUP_TIMEOUT_S

    def assign(self, job: int, token: int, pred: str, gold: str, timeout_s: float) -> bool:
        """Send one job; ``False`` if the worker is gone (it died while idle)."""
        try:
            self.conn.send((token, pred, gold))
        except OSError:
            return False
        self.state, self.job, self.token = "busy", job, token
        self.deadline = time.monotonic() + timeout_s
        return True

    def release(self) -> None:
        self.state, self.job, self.token = "idle", None, None

    def request_stop(self) -> None:
        """Ask an idle worker to exit (it finishes nothing in flight; there is nothing)."""
        try:
            self.conn.send(None)
        except OSError:
            pass

    def reap(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for exit, then SIGKILL and join so no zombie is left behind."""
        self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(_JOIN_TIMEOUT_S)
        self.conn.close()
        if self.process.exitcode is not None:
            self.process.close()
        else:  # pragma: no cover - a SIGKILLed process that does not exit in 5 s
            log.error("grader worker %s did not exit after SIGKILL", self.pid)

    def kill(self) -> None:
        self.reap(0.0)


class _WorkerPool:
    """Lazily started worker processes that run math-verify comparisons under a deadline."""

    def __init__(self, num_workers: int, timeout_s: float, start_method: str | None) -> None:
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.context = multiprocessing.get_context(start_method)
        self.workers: list[_Worker] = []
        self.tokens = itertools.count()

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[str]:
        """Status for each ``(pred, gold)`` job, running up to ``num_workers`` at a time."""
        results: list[str | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        try:
            while pending or self._busy():
                self._start_workers(len(pending) + len(self._busy()))
                self._dispatch(pending, jobs)
                self._collect(results)
        finally:
            # Only non-empty after an exception (e.g. KeyboardInterrupt): their answers would
            # arrive during a later call, so kill them now.
            for worker in self._busy():
                self._discard(worker)
        return [status if status is not None else "parse_error" for status in results]

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    def close(self) -> None:
        """Stop every worker and reap it.  Safe to call more than once."""
        workers, self.workers = self.workers, []
        for worker in workers:
            if worker.state == "idle":
                worker.request_stop()
        for worker in workers:
            worker.reap(_STOP_GRACE_S if worker.state == "idle" else 0.0)

    def _busy(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker.state == "busy"]

    def _start_workers(self, outstanding: int) -> None:
        while len(self.workers) < min(self.num_workers, outstanding):
            self.workers.append(_Worker(self.context))

    def _dispatch(self, pending: deque[int], jobs: Sequence[tuple[str, str]]) -> None:
        for worker in list(self.workers):
            if worker.state == "idle" and pending:
                job = pending[0]
                pred, gold = jobs[job]
                if worker.assign(job, next(self.tokens), pred, gold, self.timeout_s):
                    pending.popleft()
                else:
                    self._discard(worker)  # replaced by _start_workers on the next round

    def _collect(self, results: list[str | None]) -> None:
        """Wait for a reply or the nearest deadline, then handle replies and overruns."""
        active = [worker for worker in self.workers if worker.state in ("starting", "busy")]
        if not active:
            return
        wait_s = max(0.0, min(worker.deadline for worker in active) - time.monotonic())
        readable = multiprocessing.connection.wait([worker.conn for worker in active], wait_s)
        for worker in active:
            if worker.conn in readable:
                self._receive(worker, results)
        now = time.monotonic()
        for worker in active:
            if worker in self.workers and worker.state != "idle" and worker.deadline <= now:
                self._overrun(worker, results)

    def _receive(self, worker: _Worker, results: list[str | None]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._died(worker, results)
            return
        if message == ("ready",):
            worker.release()
        elif worker.state == "busy" and message[0] == worker.token:
            results[worker.job] = message[1]
            worker.release()

    def _died(self, worker: _Worker, results: list[str | None]) -> None:
        """A worker exited on its own (crash, out-of-memory kill): its item is a parse error."""
        starting = worker.state == "starting"
        if worker.state == "busy":
            log.warning("grader worker %s died while comparing; item graded parse_error", worker.pid)
            results[worker.job] = "parse_error"
        self._discard(worker)
        if starting:
            raise RuntimeError("a grader worker process exited during start-up")

    def _overrun(self, worker: _Worker, results: list[str | None]) -> None:
        starting = worker.state == "starting"
        if worker.state == "busy":
            log.warning(
                "grader comparison exceeded %.1f s; killed worker %s", self.timeout_s, worker.pid
            )
            results[worker.job] = "timeout"
        self._discard(worker)
        if starting:
            raise RuntimeError(f"a grader worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)


# --------------------------------------------------------------------------------------------
# Public grader
# --------------------------------------------------------------------------------------------


class MathGrader:
    """Grades batches of responses against gold answers; see the module docstring.

    ``extract``: extraction mode (see :func:`extract_answer`).  ``timeout_s``: wall-clock limit per
    math-verify comparison.  ``num_workers``: worker processes, started on first need.
    ``start_method``: multiprocessing start method (``None``: the platform default; any works).

    Use as a context manager or call :meth:`close`; workers are also stopped when the grader is
    garbage-collected or the interpreter exits.  ``counts`` holds running totals of statuses.
    """

    def __init__(
        self,
        extract: str = "auto",
        timeout_s: float = 5.0,
        num_workers: int = 2,
        *,
        start_method: str | None = None,
    ) -> None:
        check_mode(extract)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.extract = extract
        self.timeout_s = timeout_s
        self.num_workers = num_workers
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._pool = _WorkerPool(num_workers, timeout_s, start_method)
        # finalize holds the pool, not self, so the grader can still be garbage-collected; it
        # runs at most once: on close(), on garbage collection, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _WorkerPool.close, self._pool)

    def grade(self, responses: Sequence[str], answers: Sequence[str]) -> list[Grade]:
        """Grade ``responses[i]`` against ``answers[i]``; returns one :class:`Grade` each."""
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("MathGrader is closed")
            grades = self._grade_locked(responses, answers)
            self.counts.update(grade.status for grade in grades)
        return grades

    def grade_one(self, response: str, answer: str) -> Grade:
        return self.grade([response], [answer])[0]

    def close(self) -> None:
        """Stop the worker processes.  Idempotent."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _grade_locked(self, responses: Sequence[str], answers: Sequence[str]) -> list[Grade]:
        grades: list[Grade | None] = [None] * len(responses)
        slow: dict[tuple[str, str], list[int]] = {}  # identical pairs are compared once
        for index, (response, answer) in enumerate(zip(responses, answers)):
            extracted = extract_answer(response, self.extract)
            if extracted is None:
                grades[index] = Grade.from_status("no_answer", None)
                continue
            fast = fast_compare(extracted, str(answer))
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
