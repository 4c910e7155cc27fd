"""Answers with a structure math-verify does not compare as a whole: relations, lists of solutions, matrices.

Used by :func:`rlvr_cli.rewards.symbolic.symbolic_status`, so everything here runs in a grader worker
under its wall-clock deadline (sympy's ``simplify`` and ``solveset`` can take long).  Values inside a
structure (a solution's ``a = 3``, a matrix cell) are compared by the ``equal`` function the caller
passes in: the grader's own comparison, fast path then math-verify.

* **Relations** (:func:`relations_equivalent`): two equations or two inequalities are equivalent when
  their normal forms ``f = 0`` / ``f < 0`` / ``f <= 0`` (everything moved to one side, ``>`` turned
  into ``<``) differ by a non-zero (equation) or positive (inequality) constant factor:
  ``y = 2x - 1`` is ``2x - y - 1 = 0``, ``-2y < 4`` is ``y > -2``, but ``x < 1`` is not ``x > 1`` and
  ``y = 2x`` is not ``2x + y = 0``.  With one variable, relations (and chains, and an interval on
  the other side) are also equal when their real solution sets are: ``x^2 < 4`` is ``-2 < x < 2``.
* **Lists of solutions** (:func:`solution_list`, :func:`solutions_equal`): ``a=1,b=2;a=3,b=4`` and
  ``a=1, b=2 \\text{ and } a=3, b=4`` are the same two solutions; order does not matter, every
  value must match, and a solution missing, extra or with one wrong value makes the answer wrong.
* **Matrices** (:func:`matrix_cells`, :func:`matrices_equal`): a ``pmatrix``/``bmatrix``/``matrix``/
  ``array`` against a nested list ``[[1,2],[3,4]]``, or a one-row/one-column matrix against a flat
  list ``[2, 0.25]``, cell by cell.

Nothing here evaluates model text: relations are sympy objects math-verify's LaTeX parser built;
lists and matrices are split as strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import sympy

Equal = Callable[[str, str], bool]

# --------------------------------------------------------------------------------------------
# Relations
# --------------------------------------------------------------------------------------------


def _normal_form(relation) -> tuple[sympy.Expr, str] | None:
    """``(f, op)`` with the relation equivalent to ``f op 0``, ``op`` one of ``=``, ``<``, ``<=``."""
    if isinstance(relation, sympy.Equality):
        return relation.lhs - relation.rhs, "="
    if isinstance(relation, (sympy.StrictLessThan, sympy.LessThan)):
        return relation.lhs - relation.rhs, "<" if isinstance(relation, sympy.StrictLessThan) else "<="
    if isinstance(relation, (sympy.StrictGreaterThan, sympy.GreaterThan)):
        return relation.rhs - relation.lhs, "<" if isinstance(relation, sympy.StrictGreaterThan) else "<="
    return None


def _proportional(pred, gold) -> bool:
    """Normal forms that differ by a constant factor (positive for inequalities)."""
    a, b = _normal_form(pred), _normal_form(gold)
    if a is None or b is None or a[1] != b[1]:
        return False
    (f, op), (g, _) = a, b
    if f == 0 or g == 0:
        return False
    ratio = sympy.simplify(f / g)
    if ratio.free_symbols or not ratio.is_finite or ratio == 0:
        return False
    return True if op == "=" else bool(ratio.is_positive)


def _solution_set(answer, variable: sympy.Symbol):
    """The real solutions of a relation, a chain (``And``/``Or`` of relations) or the set itself."""
    if isinstance(answer, sympy.Set):
        return answer
    if isinstance(answer, sympy.Rel):
        return sympy.solveset(answer, variable, sympy.S.Reals)
    if isinstance(answer, (sympy.And, sympy.Or)):
        parts = [_solution_set(arg, variable) for arg in answer.args]
        if any(part is None for part in parts):
            return None
        return sympy.Intersection(*parts) if isinstance(answer, sympy.And) else sympy.Union(*parts)
    return None


def _is_relation(answer) -> bool:
    return isinstance(answer, (sympy.Rel, sympy.And, sympy.Or))


def relations_equivalent(pred, gold) -> bool:
    """Whether two parsed answers, at least one a relation, state the same thing (see the module
    docstring).  ``False`` means "not established", not "different"."""
    if not (_is_relation(pred) or _is_relation(gold)):
        return False
    if isinstance(pred, sympy.Rel) and isinstance(gold, sympy.Rel) and _proportional(pred, gold):
        return True
    symbols = set().union(*(x.free_symbols for x in (pred, gold) if isinstance(x, sympy.Basic)))
    if len(symbols) != 1:
        return False
    (variable,) = symbols
    left, right = _solution_set(pred, variable), _solution_set(gold, variable)
    if left is None or right is None or isinstance(left, sympy.ConditionSet) or isinstance(right, sympy.ConditionSet):
        return False
    return bool(left == right) or sympy.simplify(sympy.SymmetricDifference(left, right)) == sympy.S.EmptySet


# --------------------------------------------------------------------------------------------
# String structure: splitting at depth 0
# --------------------------------------------------------------------------------------------

_OPEN, _CLOSE = "([{", ")]}"


def split_top(text: str, separator: re.Pattern[str]) -> list[str]:
    """``text`` split at the matches of ``separator`` that lie outside every bracket and brace."""
    depth, depths = 0, []
    for index, char in enumerate(text):
        depths.append(depth)
        escaped = index > 0 and text[index - 1] == "\\" and char in "()[]"  # \( \) \[ \]: delimiters
        if char in _OPEN and not escaped:
            depth += 1
        elif char in _CLOSE and not escaped:
            depth = max(depth - 1, 0)
    parts, at = [], 0
    for match in separator.finditer(text):
        if depths[match.start()] == 0:
            parts.append(text[at:match.start()])
            at = match.end()
    parts.append(text[at:])
    return parts


# --------------------------------------------------------------------------------------------
# Lists of solutions
# --------------------------------------------------------------------------------------------

_SOLUTION_BREAK = re.compile(r";|\\text\s*\{\s*(?:and|or)\s*\}|\\q?quad(?![A-Za-z])|\band\b|\bor\b")
_COMMA = re.compile(",")
_ASSIGNMENT = re.compile(r"\s*([A-Za-z](?:_\{?[0-9A-Za-z]+\}?)?)\s*=\s*(\S.*?)\s*", re.DOTALL)


def solution_list(text: str) -> list[dict[str, str]] | None:
    """``a=1,b=2;a=3,b=4`` -> ``[{a: 1, b: 2}, {a: 3, b: 4}]``; ``None`` unless every part is a run of
    ``name = value`` assignments (each name once per solution) and there are at least two in all."""
    solutions = []
    for part in split_top(text, _SOLUTION_BREAK):
        if not part.strip(" ,"):
            continue
        solution: dict[str, str] = {}
        for item in split_top(part, _COMMA):
            match = _ASSIGNMENT.fullmatch(item)
            if not match or "=" in match.group(2) or match.group(1) in solution:
                return None
            solution[match.group(1).replace("{", "").replace("}", "")] = match.group(2)
        solutions.append(solution)
    return solutions if solutions and sum(map(len, solutions)) >= 2 else None


def solutions_equal(pred: Sequence[dict[str, str]], gold: Sequence[dict[str, str]], equal: Equal) -> bool:
    """The same solutions in any order: a one-to-one matching, each pair with the same names and equal values."""
    if len(pred) != len(gold):
        return False
    cache: dict[tuple[str, str], bool] = {}

    def same(a: dict[str, str], b: dict[str, str]) -> bool:
        if a.keys() != b.keys():
            return False
        for name in a:
            key = (a[name], b[name])
            if key not in cache:
                cache[key] = equal(*key)
            if not cache[key]:
                return False
        return True

    def match(i: int, used: frozenset[int]) -> bool:
        if i == len(pred):
            return True
        return any(j not in used and same(pred[i], gold[j]) and match(i + 1, used | {j}) for j in range(len(gold)))

    return match(0, frozenset())


# --------------------------------------------------------------------------------------------
# Matrices
# --------------------------------------------------------------------------------------------

# vmatrix / Vmatrix are determinants (a number), not matrices, so they are not read here.
_MATRIX_ENV = re.compile(
    r"(?:\\left\s*[(\[]\s*)?\\begin\{(pmatrix|bmatrix|Bmatrix|matrix|smallmatrix|array)\}(?:\{[^{}]*\})?"
    r"(.*)\\end\{\1\}(?:\s*\\right\s*[)\]])?",
    re.DOTALL,
)
_ROW_BREAK = re.compile(r"\\\\")
_CELL_BREAK = re.compile("&")


def matrix_cells(text: str) -> tuple[list[list[str]], bool] | None:
    """``(rows of cells, is_environment)`` for a matrix environment or a bracketed list (nested: one row
    per inner list; flat: one row), else ``None``."""
    text = text.strip()
    env = _MATRIX_ENV.fullmatch(text)
    if env:
        rows = [row for row in split_top(env.group(2), _ROW_BREAK) if row.strip()]
        cells = [[cell.strip() for cell in split_top(row, _CELL_BREAK)] for row in rows]
        return (cells, True) if cells and all(all(cells_row) for cells_row in cells) else None
    items = _bracketed_items(text)
    if items is None:
        return None
    inner = [_bracketed_items(item) for item in items]
    if all(row is not None for row in inner):
        return [list(row) for row in inner], False  # type: ignore[arg-type]
    return [items], False


def _bracketed_items(text: str) -> list[str] | None:
    """The comma-separated items of ``[...]`` / ``(...)`` / ``\\left[...\\right]``, else ``None``."""
    text = re.sub(r"\\left\s*([(\[])|\\right\s*([)\]])", lambda m: m.group(1) or m.group(2), text.strip())
    if len(text) < 2 or text[0] not in "([" or text[-1] not in ")]":
        return None
    depth = 0
    for char in text[:-1]:
        depth += (char in _OPEN) - (char in _CLOSE)
        if depth <= 0:
            return None  # the outer brackets are not one pair: "(1,2)\cup(3,4)"
    items = [item.strip() for item in split_top(text[1:-1], _COMMA)]
    return items if all(items) else None


def matrices_equal(pred: str, gold: str, equal: Equal) -> bool | None:
    """Cell by cell when at least one side is a matrix environment and the shapes agree (a vector may
    meet a flat list); ``None`` when this is not a matrix comparison."""
    left, right = matrix_cells(pred), matrix_cells(gold)
    if left is None or right is None or not (left[1] or right[1]):
        return None
    a, b = left[0], right[0]
    if len(a) != len(b) or any(len(row_a) != len(row_b) for row_a, row_b in zip(a, b)):
        a, b = flat_vector(a), flat_vector(b)
        if a is None or b is None or len(a[0]) != len(b[0]):
            return None
    return all(equal(x, y) for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b))


def flat_vector(rows: list[list[str]]) -> list[list[str]] | None:
    """A one-row or one-column matrix as one row."""
    if len(rows) == 1:
        return rows
    if all(len(row) == 1 for row in rows):
        return [[row[0] for row in rows]]
    return None
