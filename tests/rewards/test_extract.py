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
    assert extract_answer(r"\boxed{1} and \boxed{\frac{2}{3}}", mode="boxed") == r"\frac{2}{3}"


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
        extract_answer(r"\boxed{1}", mode="last_word")
    message = str(info.value)
    assert "last_word" in message
    for mode in VALID_MODES:
        assert mode in message


# ------------------------------------------------------------------------------------------
# Every answer form, chosen per dataset config (issue 11)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"The solutions are $\boxed{1}, \boxed{2}, \boxed{3}$.", "1, 2, 3"),
        (r"$x = \boxed{2}$ or $x = \boxed{-3}$", "2, -3"),
        (r"\boxed{1} \text{ and } \boxed{2}", "1, 2"),
        (r"\boxed{1};\quad\boxed{2}", "1, 2"),
        (r"First guess \boxed{3}. Checking again, it is \boxed{4}.", "4"),  # prose between: not one run
        (r"\boxed{3}" + " " * 300 + r"\boxed{4}", "4"),  # a long gap is not one answer
        (r"\boxed{7}", "7"),
    ],
)
def test_boxed_all_reads_the_last_run_of_boxes(text: str, expected: str) -> None:
    assert extract_answer(text, mode="boxed_all") == expected


def test_boxed_all_with_an_unfinished_last_box_is_no_answer() -> None:
    assert extract_answer(r"\boxed{1}, \boxed{2", mode="boxed_all") is None


@pytest.mark.parametrize(
    "mode, text, expected",
    [
        ("hash", "Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
        ("hash", "#### 1,234\n", "1,234"),
        ("hash", "#### $18$.", "18"),
        ("a_line", "Q: how many?\nA: 18", "18"),
        ("a_line", "**A:** 18", "18"),
        ("answer_is", "So she has 5 + 13 = 18 eggs. The answer is 18.", "18"),
        ("answer_is", "The final answer is $\\frac{1}{2}$. I hope it is correct.", r"\frac{1}{2}"),
        ("answer_is", "the answer is: 3.5.", "3.5"),
        ("answer_is", "The answer is 18 dollars.\nDone.", "18 dollars"),
        ("last_math", r"Therefore $x \geq 5$ is the solution.", r"x \geq 5"),
        ("last_math", r"so \(\frac12\) and then \[ 7 \] done", "7"),
        ("last_math", r"we get $$ 4 $$ in the end", "4"),
        ("last_number", "she pays 3 + 4.5 = 7.5 dollars", "7.5"),
        ("last_number", "a total of 1,250 apples", "1,250"),
        ("last_number", "so -3/4 of it", "-3/4"),
    ],
)
def test_every_answer_form_extracts(mode: str, text: str, expected: str) -> None:
    assert extract_answer(text, mode=mode) == expected


@pytest.mark.parametrize("mode", ["hash", "a_line", "answer_is", "final_statement", "last_math", "last_number"])
def test_forms_absent_give_no_answer(mode: str) -> None:
    assert extract_answer("nothing to see", mode=mode) is None


def test_a_line_needs_the_label_at_the_start_of_a_line() -> None:
    assert extract_answer("Plan A: 18 apples", mode="a_line") is None


def test_gsm8k_preset_reads_every_gsm8k_form() -> None:
    for text in ["A: 18", "#### 18", "The answer is 18.", "Answer: 18", r"so \boxed{18}"]:
        assert extract_answer(f"Janet's ducks lay 16 eggs.\n{text}", mode="gsm8k") == "18", text


def test_strict_leaves_prose_answers_alone() -> None:
    """``strict`` keeps format discipline: "the answer is" is a GSM8K form, not a MATH one; ``auto``
    reads the final sentence when nothing is boxed (issue 27)."""
    assert extract_answer("The answer is 18.", mode="strict") is None
    assert extract_answer(r"So the solution set is $y \geq 3$.", mode="strict") is None
    assert extract_answer("The answer is 18.") == "18"
    assert extract_answer("#### 18") is None


def test_a_list_of_modes_is_tried_in_order() -> None:
    text = "#### 5\nThe answer is 6."
    assert extract_answer(text, mode=["answer_is", "hash"]) == "6"
    assert extract_answer(text, mode=["hash", "answer_is"]) == "5"
    assert extract_answer("x is 7", mode=["boxed", "last_number"]) == "7"


def test_presets_and_modes_resolve() -> None:
    from rlvr_cli.rewards import PRESETS, resolve_modes

    assert resolve_modes("auto") == PRESETS["auto"]
    assert resolve_modes(["gsm8k", "last_number"]) == (*PRESETS["gsm8k"], "last_number")
    assert resolve_modes("auto") == (*resolve_modes("strict"), "final_statement")
    with pytest.raises(ValueError, match="valid modes: auto, strict, gsm8k, boxed"):
        resolve_modes(["boxed", "nope"])
    with pytest.raises(ValueError, match="empty"):
        resolve_modes([])


@pytest.mark.parametrize("mode, text, expected", [
    ("last_math", "$" * 100_001, None),  # $$ pairs hold nothing, the odd one never closes
    ("final_statement", "$" * 100_001, None),
    ("final_statement", "is $a$ " * 20_000 + ".", "a"),
    ("final_statement", "x. " * 50_000, None),
    ("boxed_all", (r"\boxed{1}" + " (a)" * 49 + r" z \boxed{2}") * 2_000, "2"),  # labels, then prose
    ("answer_line", "Answer: " + "ab " * 30_000, "ab " * 29_999 + "ab"),  # words and no verb: not a sentence
    ("answer_line", "Answer: " + "ab " * 30_000 + "is 5", "5"),
    ("last_math", "\\(" * 50_000, None),
    ("last_math", "$a" * 50_000, "a"),
    ("boxed_all", "\\boxed{1}, " * 9_000, ", ".join(["1"] * 9_000)),
    ("answer_is", "answer is " * 10_000, None),
    ("a_line", "A:\n" * 30_000, None),
    ("last_number", "1." * 50_000, "1.1"),
])
def test_adversarial_text_extracts_in_linear_time(mode: str, text: str, expected: str | None) -> None:
    """100 kB of openers that never close: a quadratic scan would take minutes (no time is asserted;
    a regression shows up as a hung test), and the answer read is still the right one."""
    assert extract_answer(text, mode=mode) == expected


def test_every_data_config_names_an_extraction_that_reads_its_format() -> None:
    """conf/data/*.yaml: gsm8k reads "####", dapo reads "Answer:", the boxed sets read boxes, countdown its
    boxed expression."""
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "data"
    modes = {p.stem: yaml.safe_load(p.read_text())["extract"] for p in conf.glob("*.yaml")}
    assert set(modes) == {"arith", "countdown", "math", "gsm8k", "dapo17k", "openr1_46k", "jsonl"}
    assert extract_answer(r"4 * 3 = 12. 12 + 6 = 18. \boxed{(4 * 3) + 6}", modes["countdown"]) == "(4 * 3) + 6"
    assert extract_answer("She has 18 eggs.\n#### 18", modes["gsm8k"]) == "18"
    assert extract_answer("The answer is 18.", modes["gsm8k"]) == "18"
    assert extract_answer("so\nAnswer: 18", modes["dapo17k"]) == "18"
    for name in ("math", "openr1_46k", "arith", "jsonl"):
        assert extract_answer(r"so \boxed{1}, \boxed{2}", modes[name]) == "1, 2"


# ------------------------------------------------------------------------------------------
# Free text, prose in an answer line, part labels between boxes (issue 27)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (r"So the solution set is $y \geq 3$.", r"y \geq 3"),  # after the copula: one math span
    ("Adding everything, the total is 27.", "27"),  # after the copula: one number
    ("The answer is 18 dollars.", "18 dollars"),  # a number and its unit
    (r"Therefore, $x = 5$ is the only solution.", "x = 5"),  # after "is" is prose: the last math span
    (r"It could be $2$, $3$ or $4$.", "4"),  # candidates: the last one only
    ("So x = 5.", "5"),  # "=" outside math states a value too
    (r"Hence \[ x = \frac{1}{2}. \]", r"x = \frac{1}{2}"),  # a period inside display math ends nothing
    (r"We get $3.5$ in the end!", "3.5"),  # a decimal point is not a sentence end
    (r"We try $x = 7$. Let me double-check the arithmetic.", None),  # the final sentence states nothing
    ("We try $x = 7$\n\nI hope this helps", None),  # a blank line ends a sentence
    ("", None),
])
def test_final_statement_reads_the_final_sentence_only(text: str, expected: str | None) -> None:
    assert extract_answer(text, mode="final_statement") == expected
    assert extract_answer(text) == expected  # auto falls back to it when nothing is boxed


def test_auto_prefers_a_box_and_an_answer_line_to_the_final_sentence() -> None:
    assert extract_answer(r"\boxed{3}. So the total is 4.") == "3"
    assert extract_answer("Answer: 3\nSo the total is 4.") == "3"


@pytest.mark.parametrize("text, expected", [
    ("Final Answer: The smallest $k$ is 12.", "12"),
    ("Final Answer: The final answer is $12$. I hope it is correct.", "12"),  # Minerva's format
    ("Answer: it is equal to $\\frac{3}{4}$", r"\frac{3}{4}"),
    ("Answer: 5 apples", "5 apples"),  # not a sentence: unchanged
    ("Answer: $x = 5$", "x = 5"),
    ("Answer: 42\\", "42"),  # a trailing backslash
])
def test_a_sentence_in_an_answer_line_is_read_as_its_statement(text: str, expected: str) -> None:
    assert extract_answer(text, mode="answer_line") == expected


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{2} for (a) and \boxed{5} for (b)", "2, 5"),
    (r"Part (a): \boxed{2}. Part (b): \boxed{5}.", "2, 5"),
    (r"(a) $\boxed{2}$, (b) $\boxed{5}$", "2, 5"),
    (r"part a: \boxed{2}; part b: \boxed{5}", "2, 5"),
    (r"\boxed{2}. Then (b) follows: \boxed{5}", "5"),  # prose between: not one run
])
def test_boxed_all_reads_boxes_with_part_labels_as_one_answer(text: str, expected: str) -> None:
    assert extract_answer(text, mode="boxed_all") == expected
