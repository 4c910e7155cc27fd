"""The Countdown verifier (rewards/countdown.py): hand-made cases in every direction, limits, the grader."""
from __future__ import annotations

from fractions import Fraction

import pytest

from rlvr_cli.data.countdown import gold
from rlvr_cli.rewards import STATUSES, CountdownGrader, build_grader
from rlvr_cli.rewards.countdown import REASONS, ExpressionError, check, evaluate, parse_expression, parse_gold

NUMS, TARGET = [3, 4, 6], 18


@pytest.mark.parametrize("expr, reason", [
    # valid: any bracketing, any order, LaTeX and unicode operators, a trailing "= target"
    ("(6 - 3) * 4 + 6", "wrong_numbers"),  # 6 used twice
    ("6 * 3", "wrong_numbers"),  # 4 not used
    ("(4 - 3) * 6 * 3", "wrong_numbers"),  # a 3 too many
    ("6 * 4 - 3 * 2", "wrong_numbers"),  # 2 is not given
    ("6 * 4 - 6", "wrong_numbers"),
    ("4 * 6 - 3", "wrong_value"),  # 21
    ("6 + 4 * 3", "correct"),  # precedence: 6 + 12
    ("(6 + 4) * 3", "wrong_value"),  # 30
    ("3 * (4 + 6) - 12", "wrong_numbers"),
    ("6 * (4 - 3)", "wrong_value"),
    ("(4 * 3) + 6", "correct"),
    ("6 + (3 * 4)", "correct"),
    ("((6)) + 4 * 3", "correct"),
    ("4 \\times 3 + 6", "correct"),
    ("4 × 3 + 6", "correct"),
    ("6 \\div 3 * 4", "wrong_value"),  # 8
    ("4 x 3 + 6", "correct"),
    ("\\left(4 * 3\\right) + 6", "correct"),
    ("4 * 3 + 6 = 18", "correct"),
    ("4 * 3 + 6 = 17", "correct"),  # the stated value is not graded; the expression is
    # division: exact rationals
    ("6 / 4 * 3", "wrong_value"),  # 4.5, not truncated to an int
    ("6 / (4 - 4)", "wrong_numbers"),
    # invalid syntax
    ("4 * * 3 + 6", "invalid"),
    ("4 * 3 + 6)", "invalid"),
    ("(4 * 3 + 6", "invalid"),
    ("-4 * 3 + 6", "invalid"),  # no unary minus (TinyZero's grammar)
    ("4 * 3 + 6 ^ 1", "invalid"),
    ("4 ** 3", "invalid"),
    ("eighteen", "invalid"),
    ("__import__('os')", "invalid"),
    ("4 * 3 + 6 = 18 = 18", "invalid"),
    ("4.0 * 3 + 6", "invalid"),
    ("", "no_answer"),
    (None, "no_answer"),
])
def test_hand_made_cases(expr, reason):
    assert check(expr, NUMS, TARGET).reason == reason


def test_division_by_zero_is_its_own_reason_not_a_crash():
    assert check("3 / (4 - 4)", [3, 4, 4], 1).reason == "division_by_zero"
    assert check("6 / (3 - 3) + 4", [6, 3, 3, 4], 4).status == "parse_error"


def test_division_is_exact():
    assert check("(6 + 3) / 4 * 4", [6, 3, 4, 4], 9).reason == "correct"
    assert check("7 / 2 + 1", [7, 2, 1], 4).reason == "wrong_value"  # 4.5, not 4
    assert evaluate(parse_expression("1 / 3 + 1 / 3 + 1 / 3")) == 1
    assert check("8 / (3 - 8 / 3)", [8, 3, 8, 3], 24).reason == "correct"  # the classic 24-game answer


def test_operator_precedence_and_associativity():
    assert evaluate(parse_expression("12 - 4 - 3")) == 5
    assert evaluate(parse_expression("12 / 4 / 3")) == 1
    assert evaluate(parse_expression("2 + 3 * 4")) == 14
    assert evaluate(parse_expression("(2 + 3) * 4")) == 20
    assert evaluate(parse_expression("12 / 4 * 3")) == 9
    assert evaluate(parse_expression("7 / 2")) == Fraction(7, 2)


def test_huge_and_runaway_inputs_are_rejected_fast():
    cases = [
        "9" * 10_000,  # a huge literal
        "999999 * 999999 * 999999",  # huge values: not the given numbers, never evaluated
        "(" * 5000 + "3" + ")" * 5000,  # deep nesting
        "(" * 30 + "3 * 4 + 6" + ")" * 30,  # deep but within the limits: fine
        "3 * " * 10_000 + "4",  # very long
        "6 + 4 * 3 " * 30,  # repeated numbers
    ]
    verdicts = [check(c, NUMS, TARGET).reason for c in cases]
    assert verdicts == ["invalid", "wrong_numbers", "invalid", "correct", "invalid", "invalid"]
    big = check("999999 * 999999 * 999999", [999999] * 3, 1)  # as large as the limits allow: exact, instant
    assert big.reason == "wrong_value" and big.value == 999999 ** 3
    with pytest.raises(ExpressionError, match="deeper"):
        parse_expression("(" * 40 + "1" + ")" * 40)
    with pytest.raises(ExpressionError, match="digits"):
        parse_expression("1234567 + 1")


def test_gold_round_trip_and_bad_gold():
    assert parse_gold(gold(24, [3, 4, 6, 8])) == ([3, 4, 6, 8], 24)
    with pytest.raises(ValueError, match="not a countdown answer"):
        parse_gold("24")
    with pytest.raises(ValueError, match="not a countdown answer"):
        parse_gold('{"target": 24}')


def test_grader_extracts_boxed_expressions_and_counts():
    answer = gold(TARGET, NUMS)
    grader = CountdownGrader()
    grades = grader.grade(
        ["4 * 3 = 12. 12 + 6 = 18. \\boxed{(4 * 3) + 6}", "\\boxed{(4 + 3) + 6}", "no box: 4 * 3 + 6",
         "\\boxed{4 * * 3}", "\\boxed{6 * 3}"], [answer] * 5)
    assert [g.status for g in grades] == ["correct", "wrong", "no_answer", "parse_error", "wrong"]
    assert [g.score for g in grades] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert grades[0].extracted == "(4 * 3) + 6"
    assert set(grader.counts) <= set(STATUSES) and sum(grader.counts.values()) == 5
    assert grader.reasons["wrong_numbers"] == 1 and grader.reasons["wrong_value"] == 1
    assert set(grader.reasons) <= set(REASONS)
    assert grader.grade_async(["\\boxed{6 + 4 * 3}"], [answer]).result()[0].status == "correct"
    grader.close()


def test_math_gold_under_the_countdown_verifier_is_a_one_line_error():
    from rlvr_cli.errors import UserError

    with pytest.raises(UserError, match="reward.verifier=countdown: not a countdown answer"):
        CountdownGrader().grade(["\\boxed{4}"], ["4"])


def test_clusters_vote_by_expression():
    grader = CountdownGrader()
    assert grader.clusters([["4 * 3 + 6", "4*3+6", "6 + 4 * 3", None]]) == [[0, 0, 1, None]]


def test_build_grader_picks_the_verifier():
    reward = {"extract": "boxed", "timeout_s": 5.0, "num_workers": 1, "verifier": "countdown"}
    assert isinstance(build_grader(reward), CountdownGrader)
    from rlvr_cli.errors import UserError

    with pytest.raises(UserError, match="reward.verifier='nope': expected one of math | countdown"):
        build_grader({**reward, "verifier": "nope"})
