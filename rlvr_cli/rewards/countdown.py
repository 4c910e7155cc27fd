"""Countdown verifier: does the expression use the given numbers exactly once each and equal the target?

A small recursive-descent parser over integers, ``+ - * /`` (also ``× ÷ x``), and parentheses, evaluated
in exact rationals (``fractions.Fraction``). Model text never reaches ``eval`` or ``exec``, and nothing can
run long: the expression is capped at ``MAX_CHARS`` characters, literals at ``MAX_DIGITS`` digits, nesting
at ``MAX_DEPTH``, and the numbers are checked before anything is evaluated, so every value is a
combination of the problem's own small numbers. TinyZero's reward (``verl/utils/reward_score/countdown.py``)
checks the same two things, with a regex and ``eval``.

:class:`CountdownGrader` has :class:`~rlvr_cli.rewards.grader.MathGrader`'s interface (``grade``,
``compare``, ``grade_async``, ``clusters``, ``counts``, ``close``), so the trainer and ``rlvr eval`` take
either; ``reward.verifier`` picks it (``rewards.build_grader``).
"""
from __future__ import annotations

import collections
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rlvr_cli.errors import UserError
from rlvr_cli.rewards.extract import check_mode
from rlvr_cli.rewards.fast import vote_key
from rlvr_cli.rewards.grader import Grade, ResponseGrader

MAX_CHARS = 200
MAX_DIGITS = 6
MAX_DEPTH = 32
_OPS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "x": "*", "\\times": "*", "\\cdot": "*",
        "/": "/", "÷": "/", "\\div": "/"}

_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}

REASONS = ("correct", "wrong_value", "wrong_numbers", "division_by_zero", "invalid", "no_answer")
"""Why a verdict is what it is (finer than ``Grade.status``: the last three map to ``parse_error``)."""


class ExpressionError(ValueError):
    """Not an expression of the grammar (or over a limit)."""


@dataclass(frozen=True)
class Verdict:
    reason: str  # one of REASONS
    value: Fraction | None = None  # the expression's value when it was evaluated

    @property
    def status(self) -> str:
        """The ``Grade`` status: correct | wrong | parse_error | no_answer."""
        return {"correct": "correct", "wrong_value": "wrong", "wrong_numbers": "wrong",
                "no_answer": "no_answer"}.get(self.reason, "parse_error")


def tokenize(text: str) -> list[str]:
    """``"(8 - 4) * 6"`` -> ``["(", "8", "-", "4", ")", "*", "6"]``; LaTeX ``\\times``, ``\\div``, ``\\left(``
    are read; anything else raises :class:`ExpressionError`."""
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"longer than {MAX_CHARS} characters")
    text = text.replace("\\left", "").replace("\\right", "").replace("{", "(").replace("}", ")")
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch.isdigit():
            j = i
            while j < len(text) and text[j].isdigit():
                j += 1
            if j - i > MAX_DIGITS:
                raise ExpressionError(f"a number longer than {MAX_DIGITS} digits")
            out.append(text[i:j])
            i = j
        elif ch in "()":
            out.append(ch)
            i += 1
        elif ch == "\\":
            word = next((w for w in ("\\times", "\\cdot", "\\div") if text.startswith(w, i)), None)
            if word is None:
                raise ExpressionError(f"unknown command at {text[i:i + 8]!r}")
            out.append(_OPS[word])
            i += len(word)
        elif ch in _OPS:
            out.append(_OPS[ch])
            i += 1
        else:
            raise ExpressionError(f"unexpected {ch!r}")
    if not out:
        raise ExpressionError("empty")
    return out


class _Parser:
    """expr := term (('+'|'-') term)* ; term := atom (('*'|'/') atom)* ; atom := INT | '(' expr ')'.
    Builds a tree of nested tuples ``(op, left, right)`` / ``int``; no unary minus (as TinyZero)."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def parse(self) -> Any:
        tree = self.expr()
        if self.pos != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.pos]!r}")
        return tree

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> Any:
        return self._chain(self.term, ("+", "-"))

    def term(self) -> Any:
        return self._chain(self.atom, ("*", "/"))

    def _chain(self, operand, ops: tuple[str, str]) -> Any:
        """``operand (op operand)*``, left-associative."""
        tree = operand()
        while self._peek() in ops:
            op = self.tokens[self.pos]
            self.pos += 1
            tree = (op, tree, operand())
        return tree

    def atom(self) -> Any:
        tok = self._peek()
        if tok is None:
            raise ExpressionError("ends early")
        self.pos += 1
        if tok.isdigit():
            return int(tok)
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError(f"nested deeper than {MAX_DEPTH}")
            tree = self.expr()
            if self._peek() != ")":
                raise ExpressionError("unclosed '('")
            self.pos += 1
            self.depth -= 1
            return tree
        raise ExpressionError(f"unexpected {tok!r}")


def parse_expression(text: str) -> Any:
    """The expression's tree (nested ``(op, left, right)`` tuples and ints); :class:`ExpressionError` if invalid."""
    return _Parser(tokenize(text)).parse()


def literals(tree: Any) -> list[int]:
    if isinstance(tree, int):
        return [tree]
    return literals(tree[1]) + literals(tree[2])


def evaluate(tree: Any) -> Fraction:
    """Exact value; ``ZeroDivisionError`` on a division by zero."""
    if isinstance(tree, int):
        return Fraction(tree)
    return _APPLY[tree[0]](evaluate(tree[1]), evaluate(tree[2]))


def check(expression: str | None, numbers: Sequence[int], target: int | Fraction) -> Verdict:
    """Grade one extracted expression: every number of ``numbers`` used exactly once (no others), then the
    value equal to ``target``.  ``expression`` may be ``"(8 - 4) * 6"`` or ``"(8 - 4) * 6 = 24"`` (a trailing
    ``= value`` is dropped)."""
    if expression is None or not expression.strip():
        return Verdict("no_answer")
    text = expression.split("=")[0] if expression.count("=") == 1 else expression
    try:
        tree = parse_expression(text)
    except ExpressionError:
        return Verdict("invalid")
    if sorted(literals(tree)) != sorted(int(n) for n in numbers):
        return Verdict("wrong_numbers")
    try:
        value = evaluate(tree)
    except ZeroDivisionError:
        return Verdict("division_by_zero")
    return Verdict("correct" if value == Fraction(target) else "wrong_value", value)


def parse_gold(answer: str) -> tuple[list[int], int]:
    """``'{"target": 24, "numbers": [3, 4, 6, 8]}'`` -> ``([3, 4, 6, 8], 24)``; ``ValueError`` otherwise."""
    try:
        spec = json.loads(answer)
        return [int(n) for n in spec["numbers"]], int(spec["target"])
    except (TypeError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"not a countdown answer (expected {{'target': int, 'numbers': [int, ...]}}): {answer!r}") from error


class CountdownGrader(ResponseGrader):
    """Grades Countdown responses (see the module docstring); in-process, microseconds per answer.

    ``counts`` holds running totals of ``Grade`` statuses, ``reasons`` of the finer :data:`REASONS`."""

    def __init__(self, extract: str | Sequence[str] = "boxed") -> None:
        check_mode(extract)
        self.extract = extract if isinstance(extract, str) else list(extract)
        self.counts: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_config(cls, reward: Any) -> CountdownGrader:
        return cls(reward.extract)

    def compare(self, predictions: Sequence[str | None], answers: Sequence[str]) -> list[Grade]:
        if len(predictions) != len(answers):
            raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
        grades = []
        for pred, answer in zip(predictions, answers):
            try:
                numbers, target = parse_gold(str(answer))
            except ValueError as error:
                raise UserError(f"reward.verifier=countdown: {error}; the countdown verifier grades data=countdown "
                                f"(reward.verifier=math grades math answers)") from None
            verdict = check(pred, numbers, target)
            self.reasons[verdict.reason] += 1
            grades.append(Grade.from_status(verdict.status, pred))
        self.counts.update(g.status for g in grades)
        return grades

    def clusters(self, groups: Sequence[Sequence[str | None]], cap: int = 0) -> list[list[int | None]]:
        """maj@k labels: answers vote together when they are the same expression up to spacing
        (two different expressions that both reach the target are two answers, as in TinyZero)."""
        out = []
        for group in groups:
            seen: dict[str, int] = {}
            out.append([None if a is None else seen.setdefault(vote_key(a), len(seen)) for a in group])
        return out
