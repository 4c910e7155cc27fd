"""The math-verify path of the grader (runs in worker processes when called through MathGrader).

math-verify (``parse`` + ``verify``, i.e. sympy) decides radicals, ``\\pi``, intervals, sets and
expressions.  Before it is asked, a few rewrites put both answers in the form math-verify compares
(see :func:`symbolic_status`); after it says "not equal", two checks it does not make are tried on
the parsed values (complex ``i`` and decimals against exact values).  Everything here can take
sympy time, so it runs under the worker pool's wall-clock deadline (``pool.py``).

Safety: model text is never given to ``eval``/``exec``.  Only math-verify's LaTeX extractor is used
(an ANTLR parser); its ``ExprExtractionConfig`` is deliberately not, because it hands text to
sympy's ``parse_expr``, which evaluates Python code.
"""

from __future__ import annotations

import logging
import re

import sympy
from math_verify import LatexExtractionConfig, parse, verify

from rlvr_cli.rewards.fast import (
    DEFAULT_REL_TOL, DEGREE_MARK, MATH_DOLLAR, PERCENT, canonical, fast_compare, is_decimal_number,
)
from rlvr_cli.rewards.structured import (
    flat_vector, matrices_equal, matrix_cells, relations_equivalent, solution_list, solutions_equal,
)

log = logging.getLogger(__name__)

# LaTeX only, as a tuple (math-verify caches on it).  See the module docstring for why not Expr.
_MATH_VERIFY_CONFIG = (LatexExtractionConfig(),)

class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once per process that its timeouts are off; here that is intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


# --------------------------------------------------------------------------------------------
# Rewrites: put both answers in the form math-verify compares
# --------------------------------------------------------------------------------------------

# ``y =``, ``f(x) =``, ``a_1 =``: the name of what the answer is, not part of its value.
_SIMPLE_LHS = re.compile(
    r"^\s*(?:[A-Za-z](?:_\{?[0-9A-Za-z]+\}?)?|[A-Za-z]\s*\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])*\s*\))\s*=\s*"
)
_RELATION = re.compile(r"\s*(<=|>=|<|>|\\leq?slant(?![A-Za-z])|\\leq?(?![A-Za-z])|\\geq?slant(?![A-Za-z])"
                       r"|\\geq?(?![A-Za-z])|\\lt(?![A-Za-z])|\\gt(?![A-Za-z]))\s*")
_VARIABLE = re.compile(r"[A-Za-z]")
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")


def strip_simple_lhs(text: str) -> str:
    """``f(x) = 2x+1`` -> ``2x+1`` when the left-hand side is a bare name and there is one ``=``."""
    match = _SIMPLE_LHS.match(text)
    if not match:
        return text
    rest = text[match.end():]
    return text if ("=" in rest or _RELATION.search(rest)) else rest.strip()


def inequality_to_interval(text: str) -> str:
    """``1 \\le x < 2`` -> ``[1,2)``, ``x > 2`` -> ``(2,\\infty)``; anything else unchanged.

    Only a single variable bounded on one side, or a chain ``a < x < b`` in one direction: the
    solution set an interval answer key writes.  ``x < 1 or x > 2`` and the like stay as they are.
    """
    parts = _RELATION.split(text.strip())
    if len(parts) not in (3, 5) or any(not part.strip() for part in parts[::2]):
        return text
    values, ops = [part.strip() for part in parts[::2]], [_direction(op) for op in parts[1::2]]
    if any("," in v or "=" in v or r"\text" in v for v in values):
        return text
    if len(values) == 2:
        left, right = values
        if _VARIABLE.fullmatch(left) and not _VARIABLE.fullmatch(right):
            return _one_sided(ops[0], right)
        if _VARIABLE.fullmatch(right) and not _VARIABLE.fullmatch(left):
            return _one_sided(_flip(ops[0]), left)
        return text
    low, var, high = values
    if not _VARIABLE.fullmatch(var) or ops[0][0] != ops[1][0]:
        return text
    if ops[0][0] == ">":  # b > x > a
        low, high, ops = high, low, [_flip(ops[1]), _flip(ops[0])]
    return ("[" if ops[0][1] else "(") + f"{low},{high}" + ("]" if ops[1][1] else ")")


def _direction(op: str) -> tuple[str, bool]:
    """(``"<"`` or ``">"``, inclusive)."""
    op = op.strip()
    less = op.startswith("<") or op.startswith(r"\le") or op == r"\lt"
    inclusive = "=" in op or op.startswith((r"\le", r"\ge"))
    return ("<" if less else ">", inclusive)


def _flip(op: tuple[str, bool]) -> tuple[str, bool]:
    return (">" if op[0] == "<" else "<", op[1])


def _one_sided(op: tuple[str, bool], bound: str) -> str:
    """``x op bound`` as an interval."""
    if op[0] == "<":
        return f"(-\\infty,{bound}" + ("]" if op[1] else ")")
    return ("[" if op[1] else "(") + f"{bound},\\infty)"


def degrees_to_radians(text: str) -> str:
    """``30^\\circ`` -> ``30\\cdot\\frac{\\pi}{180}``."""
    return DEGREE_MARK.sub(r"\\cdot\\frac{\\pi}{180}", text)


def vector_as_tuple(text: str) -> str:
    """A one-row or one-column matrix as the tuple of its entries: ``\\begin{pmatrix}1\\\\2\\end{pmatrix}``
    -> ``(1,2)``; any other text unchanged."""
    cells = matrix_cells(text)
    row = flat_vector(cells[0]) if cells is not None and cells[1] else None
    return text if row is None else "(" + ",".join(row[0]) + ")"


def rewrite_pair(pred: str, gold: str) -> tuple[str, str]:
    """Both answers (after :func:`_math_verify_text`) rewritten so math-verify can compare them:

    * equation left-hand sides that only name the answer (``y =`` vs ``f(x) =``) are dropped;
    * a one-variable inequality becomes its interval (``x \\ge 5`` -> ``[5,\\infty)``);
    * degrees inside a trigonometric function are radians to sympy, so they are converted
      (``\\cos(90^\\circ - x)`` -> ``\\cos(90\\cdot\\frac{\\pi}{180} - x)``);
    * degrees meet radians: with a degree sign on one side only and ``\\pi`` on the other, the
      degrees are converted (``30^\\circ`` vs ``\\frac{\\pi}{6}``);
    * a vector meets a tuple: a one-row/one-column matrix against a parenthesised list is
      read as the tuple of its entries.
    """
    pred, gold = strip_simple_lhs(pred), strip_simple_lhs(gold)
    pred, gold = inequality_to_interval(pred), inequality_to_interval(gold)
    pred, gold = (degrees_to_radians(x) if _TRIG.search(x) else x for x in (pred, gold))
    pred_deg, gold_deg = bool(DEGREE_MARK.search(pred)), bool(DEGREE_MARK.search(gold))
    if pred_deg != gold_deg:
        if pred_deg and r"\pi" in gold:
            pred = degrees_to_radians(pred)
        elif gold_deg and r"\pi" in pred:
            gold = degrees_to_radians(gold)
    pred_vec, gold_vec = vector_as_tuple(pred), vector_as_tuple(gold)
    if (pred_vec != pred) != (gold_vec != gold):  # exactly one side is a vector
        if gold.lstrip().startswith(("(", "[")) or pred.lstrip().startswith(("(", "[")):
            pred, gold = pred_vec, gold_vec
    return pred, gold


# --------------------------------------------------------------------------------------------
# math-verify, then the checks it does not make
# --------------------------------------------------------------------------------------------


def _math_verify_text(answer: str) -> str:
    """Cleaned answer without a percent sign (math-verify fails to parse ``50\\%`` alone)."""
    return PERCENT.sub("", canonical(answer))


def _gold_document(gold: str) -> str:
    """Gold in ``$...$`` unless it already carries math delimiters or a box."""
    return gold if (MATH_DOLLAR.search(gold) or r"\boxed" in gold) else f"${gold}$"


def _prediction_document(pred: str) -> str:
    """Prediction in ``\\boxed{...}``: math-verify's highest-priority extraction pattern."""
    return pred if MATH_DOLLAR.search(pred) else f"\\boxed{{{pred}}}"


def _parse(document: str) -> list:
    return parse(document, extraction_config=_MATH_VERIFY_CONFIG, parsing_timeout=None, raise_on_error=True)


def symbolic_status(pred: str, gold: str, rel_tol: float = DEFAULT_REL_TOL) -> str:
    """Compare in this process: ``"correct"``, ``"wrong"`` or ``"parse_error"``.

    No timeout protection: call it from a process that may be killed (the worker pool).  Steps:

    * two **lists of solutions** (``a=1,b=2;a=3,b=4``) are compared solution by solution, and that
      decides (``structured.py``);
    * two **relations** equivalent by normal form (``y = 2x - 1`` vs ``2x - y - 1 = 0``) or, in one
      variable, by solution set (``-2y < 4`` vs ``(-2, \\infty)``) are correct (``structured.py``);
    * :func:`rewrite_pair`; math-verify's ``parse`` + ``verify``; then, where math-verify has no rule:

    * **a decimal against an exact value** (``1.7320508075688772`` vs ``\\sqrt{3}``): decided by
      the relative difference alone (``rel_tol``), in both directions, so ``1.732`` is not
      ``\\sqrt{3}`` even though math-verify's 6-place rounding would say it is;
    * **matrices** against nested or flat lists, cell by cell (``structured.py``);
    * **complex numbers**: when ``i`` is the only symbol, it is read as the imaginary unit and the
      difference simplified (``i(2-i)`` = ``1+2i``, ``\\sqrt{-4}`` = ``2i``, ``e^{i\\pi}`` = ``-1``).

    An exception while parsing, or nothing parseable in either answer, is a ``parse_error``; an
    exception inside a single comparison is treated by math-verify as "not equal".
    """
    pred_clean, gold_clean = _math_verify_text(pred), _math_verify_text(gold)

    def equal(a: str, b: str) -> bool:  # a part of a structured answer, compared as a whole answer is
        fast = fast_compare(a, b, rel_tol)
        return fast if fast is not None else symbolic_status(a, b, rel_tol) == "correct"

    pred_solutions, gold_solutions = solution_list(pred_clean), solution_list(gold_clean)
    if pred_solutions is not None and gold_solutions is not None:
        return "correct" if solutions_equal(pred_solutions, gold_solutions, equal) else "wrong"
    pred_text, gold_text = rewrite_pair(pred_clean, gold_clean)
    try:
        # two relations, or an inequality against anything (an interval): an equation against a
        # value (``y = 2x`` vs ``2x``) is left to the rewrites, without two more parses
        pred_ineq, gold_ineq = bool(_RELATION.search(pred_clean)), bool(_RELATION.search(gold_clean))
        if pred_ineq or gold_ineq or ("=" in pred_clean and "=" in gold_clean):
            pred_relation = _parse(_prediction_document(pred_clean))
            gold_relation = _parse(_gold_document(gold_clean))
            if pred_relation and gold_relation and relations_equivalent(pred_relation[0], gold_relation[0]):
                return "correct"
        gold_parsed = _parse(_gold_document(gold_text))
        pred_parsed = _parse(_prediction_document(pred_text))
        if not gold_parsed or not pred_parsed:
            return "parse_error"
        decided = _decimal_against_exact(pred_text, gold_text, pred_parsed[0], gold_parsed[0], rel_tol)
        if decided is not None:
            return "correct" if decided else "wrong"
        # Argument order matters: verify(gold, target).
        same = verify(gold_parsed, pred_parsed, timeout_seconds=None)
        if not same:
            matrix = matrices_equal(pred_clean, gold_clean, equal)
            same = matrix if matrix is not None else _complex_equal(pred_parsed[0], gold_parsed[0])
    except Exception:  # noqa: BLE001 - any failure inside sympy is a grading failure, not a crash
        log.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return "parse_error"
    return "correct" if same else "wrong"


def _decimal_against_exact(pred_text: str, gold_text: str, pred, gold, rel_tol: float) -> bool | None:
    """``None`` unless exactly one side is a plain decimal and the other a closed-form number."""
    pred_dec, gold_dec = is_decimal_number(pred_text), is_decimal_number(gold_text)
    if pred_dec == gold_dec:
        return None
    decimal, exact = (pred, gold) if pred_dec else (gold, pred)
    if not (isinstance(exact, sympy.Expr) and isinstance(decimal, sympy.Expr)) or exact.free_symbols:
        return None
    if not exact.is_number or not decimal.is_number:
        return None
    value, target = complex(sympy.N(exact, 30)), complex(sympy.N(decimal, 30))
    if abs(value.imag) > 0 or abs(target.imag) > 0:
        return False
    a, b = value.real, target.real
    return a == b or abs(a - b) <= rel_tol * max(abs(a), abs(b))


def _complex_equal(pred, gold) -> bool:
    """Equal once ``i`` is the imaginary unit (only when ``i`` is the one free symbol)."""
    exprs = [x for x in (pred, gold) if isinstance(x, sympy.Basic)]
    if len(exprs) != 2:
        return False
    symbols = pred.free_symbols | gold.free_symbols
    if not symbols or {s.name for s in symbols} != {"i"}:
        return False
    unit = {s: sympy.I for s in symbols}
    if isinstance(pred, sympy.FiniteSet) and isinstance(gold, sympy.FiniteSet):
        left = {sympy.nsimplify(sympy.simplify(e.subs(unit))) for e in pred}
        right = {sympy.nsimplify(sympy.simplify(e.subs(unit))) for e in gold}
        return left == right
    if not (isinstance(pred, sympy.Expr) and isinstance(gold, sympy.Expr)):
        return False
    return sympy.simplify(sympy.expand(pred.subs(unit) - gold.subs(unit))) == 0
