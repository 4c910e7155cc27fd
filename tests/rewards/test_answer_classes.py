"""The answer classes the grader used to misjudge (issue 27), class by class, on the training path:
``MathGrader.grade`` on whole responses (extraction and comparison together).

Every class has right answers that must now be correct and wrong answers of the same form that must
stay wrong; the examples are our own, in the forms public graders' suites (Math-Verify, MARIO_EVAL,
NeMo-Skills, lighteval) collect.
"""
from __future__ import annotations

import pytest

from rlvr_cli.rewards import MathGrader
from rlvr_cli.rewards.functions import RewardInputs, build_rewards, score


@pytest.fixture(scope="module")
def grader():
    with MathGrader(timeout_s=10.0, num_workers=2) as instance:
        yield instance


@pytest.fixture(scope="module")
def tolerant():
    """Qwen2.5-Math's tolerance, opt-in: ``reward.rel_tol=1e-4``."""
    with MathGrader(timeout_s=10.0, num_workers=1, rel_tol=1e-4) as instance:
        yield instance


def boxed(answer: str) -> str:
    return f"We work it out step by step. The answer is $\\boxed{{{answer}}}$."


CASES = [
    # --- free text: no box, no answer line -> the final sentence's statement
    pytest.param(r"Solving, we find the solution set is $t \le -1$.", r"(-\infty, -1]", "correct", id="free: set"),
    pytest.param(r"So the solution set is $t \ge -1$.", r"(-\infty, -1]", "wrong", id="free: other set"),
    pytest.param(r"The reflection matrix is $\begin{pmatrix}1&0\\0&-1\end{pmatrix}$.",
                 r"\begin{bmatrix}1&0\\0&-1\end{bmatrix}", "correct", id="free: matrix"),
    pytest.param("Adding the three parts, the total is 27.", "27", "correct", id="free: number after is"),
    pytest.param(r"Therefore, $n = 14$ is the smallest such number.", "14", "correct", id="free: last math span"),
    pytest.param(r"Therefore, $n = 15$ is the smallest such number.", "14", "wrong", id="free: wrong value"),
    pytest.param(r"It could be $2$, $3$ or $4$.", "2", "wrong", id="free: candidates, first"),
    pytest.param(r"It could be $2$, $3$ or $4$.", "3", "wrong", id="free: candidates, middle"),
    pytest.param(r"We get $x = 7$. Let me double-check the arithmetic.", "7", "no_answer", id="free: earlier sentence"),
    # --- scientific notation vs fraction
    pytest.param(boxed(r"2.5 \times 10^{-3}"), r"\frac{1}{400}", "correct", id="sci: times"),
    pytest.param(boxed(r"2.5 \cdot 10^{-3}"), r"\dfrac{1}{400}", "correct", id="sci: cdot"),
    pytest.param(boxed("3.0e8"), "300000000", "correct", id="sci: e-notation"),
    pytest.param(boxed(r"\frac{1}{400}"), r"2.5\times10^{-3}", "correct", id="sci: gold side"),
    pytest.param(boxed(r"6.022 \times 10^{23}"), "602200000000000000000000", "correct", id="sci: big, exact"),
    pytest.param(boxed(r"2.5 \times 10^{-4}"), r"\frac{1}{400}", "wrong", id="sci: wrong exponent"),
    pytest.param(boxed(r"2.6 \times 10^{-3}"), r"\frac{1}{400}", "wrong", id="sci: wrong mantissa"),
    # --- relations: inequalities and equations by normal form
    pytest.param(boxed(r"-3t \geq 6"), r"t \le -2", "correct", id="ineq: scaled and flipped"),
    pytest.param(boxed(r"-3t \geq 6"), r"t \geq -2", "wrong", id="ineq: direction"),
    pytest.param(boxed(r"-3t > 6"), r"t \le -2", "wrong", id="ineq: strictness"),
    pytest.param(boxed(r"x < 1"), r"x > 1", "wrong", id="ineq: x<1 vs x>1"),
    pytest.param(boxed(r"x^2 < 9"), r"-3 < x < 3", "correct", id="ineq: solution set"),
    pytest.param(boxed(r"x^2 < 9"), r"-3 < x < 4", "wrong", id="ineq: other solution set"),
    pytest.param(boxed(r"-4m < 8"), r"(-2, \infty)", "correct", id="ineq: vs interval"),
    pytest.param(boxed(r"y = 3 - x"), r"x + y - 3 = 0", "correct", id="eq: one side"),
    pytest.param(boxed(r"2y = 6 - 2x"), r"y = -x + 3", "correct", id="eq: scaled"),
    pytest.param(boxed(r"x^2 + y^2 = 4"), r"2x^2 + 2y^2 - 8 = 0", "correct", id="eq: circle"),
    pytest.param(boxed(r"y = 2x"), r"2x + y = 0", "wrong", id="eq: y=2x vs 2x+y=0"),
    pytest.param(boxed(r"y = 3x"), r"3x - y + 1 = 0", "wrong", id="eq: shifted line"),
    # --- symbolic equivalence with degrees inside trigonometric functions
    pytest.param(boxed(r"\cos(90^\circ - \theta)"), r"\sin\theta", "correct", id="trig: cofunction"),
    pytest.param(boxed(r"\cos(90^\circ + \theta)"), r"\sin\theta", "wrong", id="trig: wrong sign"),
    pytest.param(boxed(r"\sin 30^\circ"), r"\frac{1}{2}", "correct", id="trig: value"),
    pytest.param(boxed(r"\sin 60^\circ"), r"\frac{1}{2}", "wrong", id="trig: wrong value"),
    # --- several boxed answers, one per part
    pytest.param(r"\boxed{3} for (a) and \boxed{7} for (b).", "3, 7", "correct", id="boxes: for (a)"),
    pytest.param(r"Part (a): $\boxed{3}$. Part (b): $\boxed{7}$.", "3, 7", "correct", id="boxes: Part (b):"),
    pytest.param(r"(a) \boxed{3}, (b) \boxed{7}", "3, 7", "correct", id="boxes: labels first"),
    pytest.param(r"\boxed{3} for (a) and \boxed{8} for (b).", "3, 7", "wrong", id="boxes: a wrong part"),
    pytest.param(r"First try \boxed{3}. On reflection, \boxed{7}.", "3, 7", "wrong", id="boxes: prose between"),
    # --- prose inside the extracted answer
    pytest.param("Done.\nFinal Answer: The least possible value of $n$ is 15.", "15", "correct", id="prose: is"),
    pytest.param("Final Answer: The final answer is $15$. I hope it is correct.", "15", "correct", id="prose: Minerva"),
    pytest.param("Done.\nFinal Answer: The least possible value of $n$ is 16.", "15", "wrong", id="prose: wrong"),
    # --- trailing backslash
    pytest.param("Answer: 64\\", "64", "correct", id="backslash: answer line"),
    pytest.param(boxed("64\\\\"), "64", "correct", id="backslash: line break in box"),
    pytest.param("Answer: 65\\", "64", "wrong", id="backslash: wrong"),
    # --- matrix vs list
    pytest.param(boxed("[3, 0.5]"), r"\begin{pmatrix}3\\\frac12\end{pmatrix}", "correct", id="matrix: column vs list"),
    pytest.param(boxed("[3, 0.25]"), r"\begin{pmatrix}3\\\frac12\end{pmatrix}", "wrong", id="matrix: wrong cell"),
    pytest.param(boxed("[[1,0],[2,1]]"), r"\begin{bmatrix}1&0\\2&1\end{bmatrix}", "correct", id="matrix: nested list"),
    pytest.param(boxed("[[1,0],[1,2]]"), r"\begin{bmatrix}1&0\\2&1\end{bmatrix}", "wrong", id="matrix: transposed"),
    pytest.param(boxed("[1, 0, 2, 1]"), r"\begin{bmatrix}1&0\\2&1\end{bmatrix}", "wrong", id="matrix: flattened"),
    # --- several solutions joined by ";" / "and" / "or"
    pytest.param(boxed("p=2,q=5;p=5,q=2"), r"p=5, q=2 \text{ or } p=2, q=5", "correct", id="solutions: any order"),
    pytest.param(boxed(r"p=2, q=5 \text{ and } p=5, q=2"), "p=2,q=5;p=5,q=2", "correct", id="solutions: and"),
    pytest.param(boxed(r"p=\frac{4}{2},q=5;p=5,q=2"), "p=2,q=5;p=5,q=2", "correct", id="solutions: values compared"),
    pytest.param(boxed("p=2,q=5;p=5,q=3"), "p=2,q=5;p=5,q=2", "wrong", id="solutions: a wrong value"),
    pytest.param(boxed("p=2,q=5"), "p=2,q=5;p=5,q=2", "wrong", id="solutions: one missing"),
    pytest.param(boxed("p=2,q=5;p=5,q=2;p=1,q=1"), "p=2,q=5;p=5,q=2", "wrong", id="solutions: one extra"),
]


@pytest.mark.parametrize("response, gold, status", CASES)
def test_answer_class(grader: MathGrader, response: str, gold: str, status: str) -> None:
    assert grader.grade_one(response, gold).status == status


@pytest.mark.parametrize("response, gold, default, with_tolerance", [
    (boxed("31.4159"), r"10\pi", "wrong", "correct"),
    (boxed(r"\approx 2.2361"), r"\sqrt{5}", "wrong", "correct"),
    (boxed("0.7854"), r"\frac{\pi}{4}", "wrong", "correct"),
    (boxed(r"2\pi"), "6.2832", "wrong", "correct"),  # the gold is the decimal
    (boxed("6.28"), r"2\pi", "wrong", "wrong"),  # rounded too far for 1e-4
    (boxed("31.4159"), r"11\pi", "wrong", "wrong"),
])
def test_decimal_approximation_only_under_an_opt_in_tolerance(
    grader: MathGrader, tolerant: MathGrader, response: str, gold: str, default: str, with_tolerance: str
) -> None:
    assert grader.grade_one(response, gold).status == default
    assert tolerant.grade_one(response, gold).status == with_tolerance


def test_the_free_text_fallback_can_be_switched_off(grader: MathGrader) -> None:
    """``strict`` (or any list without ``final_statement``) in a data config keeps format discipline."""
    response = r"So the solution set is $t \le -1$."
    assert grader.grade([response], [r"(-\infty, -1]"])[0].status == "correct"
    assert grader.grade([response], [r"(-\infty, -1]"], extract="strict")[0].status == "no_answer"
    assert grader.grade([response], [r"(-\infty, -1]"], extract=["boxed_all", "answer_line"])[0].status == "no_answer"


def test_a_free_text_answer_is_accurate_but_not_formatted(grader: MathGrader) -> None:
    """The ``format`` reward term rewards the asked-for form, not the fallback that read prose."""
    completions = [r"Hence $\boxed{27}$.", "Adding the three parts, the total is 27."]
    grades = grader.grade(completions, ["27", "27"])
    inputs = RewardInputs(completions, ["27", "27"], grades, [5, 5], {})
    _, values = score(build_rewards({"funcs": ["accuracy", "format"], "extract": "auto"}, 100), inputs)
    assert values == {"accuracy": [1.0, 1.0], "format": [1.0, 0.0]}
