"""extract_answer: last \\boxed{} with balanced braces, DAPO "Answer:" lines, and the auto mode."""

from __future__ import annotations

import pytest

from rlvr_cli.rewards import VALID_MODES, extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not change the depth
        (r"\boxed{\left\{ x \right\}}", r"\left\{ x \right\}"),
        (r"\fbox{42}", "42"),
        (r"\boxed {7}", "7"),
        (r"\boxed 5.", "5"),  # TeX allows a one-token argument without braces
        (r"\boxed{ 12 }", "12"),
        (r"\boxed{\text{(B)}}", r"\text{(B)}"),
    ],
)
def test_boxed_content_with_nested_braces(text: str, expected: str) -> None:
    assert extract_answer(text, mode="boxed") == expected


def test_last_boxed_wins() -> None:
    text = r"First \boxed{3}, then I realise the mistake: \boxed{4}. Final: \fbox{5}"
    assert extract_answer(text, mode="boxed") == "5"
    assert extract_answer(r"\boxed{1} and \boxed{\frac{2}{3}}") == r"\frac{2}{3}"


@pytest.mark.parametrize(
    "text",
    [
        "no box here, the answer is 5",
        r"\boxed{}",  # empty box
        r"\boxed{  }",
        r"the final answer is \boxed{\frac{1}{2",  # cut off at the length limit
        r"\boxed{3} ... so the answer is \boxed{4",  # unfinished last box: not the earlier one
        "",
    ],
)
def test_no_boxed_answer(text: str) -> None:
    assert extract_answer(text, mode="boxed") is None


def test_boxed_is_not_a_prefix_match() -> None:
    assert extract_answer(r"\boxedfoo{3}", mode="boxed") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Reasoning...\nAnswer: 42", "42"),
        ("answer: 42\n", "42"),
        ("ANSWER:   -7.5  \nthanks", "-7.5"),
        ("Answer: 1/2.", "1/2"),
        (r"Answer: $\frac{1}{2}$", r"\frac{1}{2}"),
        (r"Answer: $\frac{1}{2}$.", r"\frac{1}{2}"),
        ("**Answer:** 17", "17"),
        ("Final Answer: 9", "9"),
        ("Answer: 3\nWait, no.\nAnswer: 4\n", "4"),  # last one wins
        ("Answer: 5\\$", "5\\$"),  # an escaped dollar is text, not a math delimiter
        ("Answer: $$12$$", "12"),
        ("Answer: $1$ and $2$", "$1$ and $2$"),  # two math spans: keep the delimiters
    ],
)
def test_answer_line(text: str, expected: str) -> None:
    assert extract_answer(text, mode="answer_line") == expected


@pytest.mark.parametrize("text", ["no label", "Answer:\n42", "Answer: $ $", "Answer: ."])
def test_answer_line_missing(text: str) -> None:
    assert extract_answer(text, mode="answer_line") is None


def test_auto_prefers_boxed_and_falls_back_to_answer_line() -> None:
    assert extract_answer("Answer: 3\n" + r"\boxed{4}") == "4"
    assert extract_answer("Answer: 3") == "3"
    assert extract_answer(r"\boxed{4" + "\nAnswer: 3") == "3"  # unfinished box, then a label
    assert extract_answer("nothing at all") is None


def test_boxed_mode_does_not_fall_back() -> None:
    assert extract_answer("Answer: 3", mode="boxed") is None


def test_answer_line_mode_ignores_boxes() -> None:
    assert extract_answer(r"\boxed{4}", mode="answer_line") is None


def test_unknown_mode_lists_valid_modes() -> None:
    with pytest.raises(ValueError) as info:
        extract_answer(r"\boxed{1}", mode="last_number")
    message = str(info.value)
    assert "last_number" in message
    for mode in VALID_MODES:
        assert mode in message
