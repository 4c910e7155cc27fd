"""rewards/structured.py: relations by normal form and solution set, lists of solutions, matrices."""
from __future__ import annotations

import re

import pytest
import sympy
from sympy import Eq, Ge, Gt, Interval, Le, Lt, oo

from rlvr_cli.rewards.structured import (
    matrices_equal, matrix_cells, relations_equivalent, solution_list, solutions_equal, split_top,
)

x, y = sympy.symbols("x y")


@pytest.mark.parametrize("pred, gold, same", [
    (Eq(y, 2 * x - 1), Eq(2 * x - y - 1, 0), True),  # non-zero factor -1
    (Eq(2 * y, 4 * x - 2), Eq(y, 2 * x - 1), True),  # factor 2
    (Eq(y, 2 * x), Eq(2 * x + y, 0), False),
    (Lt(-2 * y, 4), Gt(y, -2), True),  # factor 2 after turning > into <
    (Lt(x, 1), Gt(x, 1), False),  # factor -1: the other half-line
    (Le(x, 1), Lt(x, 1), False),  # strict vs not
    (Ge(x**2, 4), Le(4, x**2), True),
    (Lt(x**2, 4), sympy.And(Lt(-2, x), Lt(x, 2)), True),  # one variable: solution sets
    (Lt(x**2, 4), Interval.open(-2, 2), True),
    (Lt(x**2, 4), Interval.open(-2, 3), False),
    (Gt(x, 2), Interval(2, oo), False),  # (2, oo) vs [2, oo)
    (Eq(x, 2), sympy.Integer(2), False),  # an equation against a bare value: not established here
])
def test_relations_equivalent(pred, gold, same: bool) -> None:
    assert relations_equivalent(pred, gold) is same


def test_split_top_ignores_separators_inside_brackets_and_braces() -> None:
    comma = re.compile(",")
    assert split_top(r"a=f(1,2), b=\frac{1,2}{3}, c=[4,5)", comma) == ["a=f(1,2)", r" b=\frac{1,2}{3}", " c=[4,5)"]
    assert split_top(r"\(1, 2\), 3", comma) == [r"\(1", r" 2\)", " 3"]  # \( \) are delimiters, not brackets


@pytest.mark.parametrize("text, parsed", [
    ("a=1,b=2;a=3,b=4", [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]),
    (r"x_1 = \frac{1}{2}, x_{2} = 3 \text{ or } x_1 = 0, x_2 = 0",
     [{"x_1": r"\frac{1}{2}", "x_2": "3"}, {"x_1": "0", "x_2": "0"}]),
    ("x = 1 or x = 2", [{"x": "1"}, {"x": "2"}]),
    ("x = 1", None),  # one assignment: nothing to structure
    ("a=1,a=2", None),  # a name twice in one solution
    ("a=1,2", None),  # not every item an assignment
    ("a = b = 1, c = 2", None),
])
def test_solution_list(text: str, parsed) -> None:
    assert solution_list(text) == parsed


def test_solutions_are_matched_one_to_one_whatever_the_order() -> None:
    equal = lambda a, b: a == b  # noqa: E731
    gold = [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert solutions_equal([{"b": "4", "a": "3"}, {"a": "1", "b": "2"}], gold, equal)
    assert not solutions_equal([{"a": "1", "b": "2"}, {"a": "1", "b": "2"}], gold, equal)  # one twice
    assert not solutions_equal([{"a": "1", "b": "2"}], gold, equal)
    assert not solutions_equal([{"a": "1", "c": "2"}, {"a": "3", "b": "4"}], gold, equal)


@pytest.mark.parametrize("text, cells", [
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", ([["1", "2"], ["3", "4"]], True)),
    (r"\left[\begin{array}{cc}1&2\\3&4\end{array}\right]", ([["1", "2"], ["3", "4"]], True)),
    (r"\begin{bmatrix} 2 \\ \frac14 \\ \end{bmatrix}", ([["2"], [r"\frac14"]], True)),
    ("[[1,2],[3,4]]", ([["1", "2"], ["3", "4"]], False)),
    ("(2, 0.25)", ([["2", "0.25"]], False)),
    (r"\begin{vmatrix}1&2\\3&4\end{vmatrix}", None),  # a determinant is a number
    (r"(1,2)\cup(3,4)", None),
    ("5", None),
])
def test_matrix_cells(text: str, cells) -> None:
    assert matrix_cells(text) == cells


def test_matrices_compare_cell_by_cell_when_the_shapes_agree() -> None:
    equal = lambda a, b: a.replace(" ", "") == b.replace(" ", "")  # noqa: E731
    column = r"\begin{pmatrix}2\\5\end{pmatrix}"
    assert matrices_equal("[2, 5]", column, equal) is True  # a vector meets a flat list
    assert matrices_equal("[2, 6]", column, equal) is False
    assert matrices_equal("[2, 5, 1]", column, equal) is None  # shapes disagree: not a matrix comparison
    assert matrices_equal("[2, 5]", "(2, 5)", equal) is None  # no matrix on either side
