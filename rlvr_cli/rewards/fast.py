"""Normalisation and the fast path of the grader: cheap, exact decisions in the calling process.

``fast_compare`` decides identical text, multiple-choice letters, plain numbers (``42``, ``1,000``,
``-0.5``, ``3/4``, ``\\frac{3}{4}``, ``1 1/2``, ``025``, ``1.25 \\times 10^{-2}``, ``30^\\circ``, ``50\\%``,
``5 \\text{ cm}^2``, ``five``), clock times (``8:34 p.m.`` = ``20:34:00``) and the "no solution" phrases.
A GRPO step grades ~128 responses and most gold answers are integers, so this settles most of a batch in
microseconds with no sympy involved.  Anything else returns ``None`` and goes to math-verify
(``symbolic.py``) in a worker process.  Nothing here evaluates model text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from rlvr_cli.rewards.extract import read_braced

# Relative tolerance when one side is a decimal: ``0.0833333333333333`` is ``1/12``, ``0.333333``
# (rounded by hand) is not ``1/3``.  ``reward.rel_tol`` changes it (Qwen2.5-Math's grader uses 1e-4).
DEFAULT_REL_TOL = 1e-8

# --------------------------------------------------------------------------------------------
# Normalisation shared by the fast path and the math-verify path
# --------------------------------------------------------------------------------------------

# Unicode and TeX spellings of the same thing.  Macros get a trailing space so that "πr" does
# not become the unknown macro "\pir".
_SPELLINGS: tuple[tuple[str, str], ...] = (
    ("−", "-"), ("–", "-"), ("∞", r"\infty "), ("π", r"\pi "), ("×", r"\times "),
    ("·", r"\cdot "), ("≤", r"\le "), ("≥", r"\ge "), ("°", r"^\circ "),
    (r"\varnothing", r"\emptyset"), (r"\dfrac", r"\frac"), (r"\tfrac", r"\frac"),
    ("{,}", ","), (r"\mathrm{i}", "i"),  # the upright i is the imaginary unit (ISO 80000-2)
    ("≈", r"\approx "),
)
# ``11,\! 111,\! 100``: a comma followed by a negative thin space is a digit-group separator (TeX
# spaces in math mode are not spaces), so the blank after it goes too; any other ``\!`` is dropped.
_GROUP_SEPARATOR = re.compile(r",\\!\s*")
# A TeX line break "\\\\" is matched first so that "\\\\ " is not misread as "\\" + "\\ ".
_THIN_SPACE = re.compile(r"\\\\|\\[,;: ]|~")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), (r"\(", r"\)"), (r"\[", r"\]"))
_BOX_COMMANDS = (r"\boxed", r"\fbox")
_TEXT_COMMANDS = (r"\text", r"\textrm", r"\textbf", r"\mbox", r"\mathrm", r"\mathbf")
PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*percent\s*\}|percent)$")
MATH_DOLLAR = re.compile(r"(?<!\\)\$")  # a "$" that is a math delimiter, not "\$"
# "\approx 31.416", "x \approx 31.416": an answer stated as an approximation is the value it states
# (a decimal is then compared within rel_tol, as any decimal is).
_APPROXIMATELY = re.compile(r"^(?:[A-Za-z]\s*)?\\(?:approx|simeq)(?![A-Za-z])\s*")


def canonical(answer: str) -> str:
    """Spelling-level clean-up that never changes the mathematical value of an answer."""
    text = str(answer).strip()
    for old, new in _SPELLINGS:
        text = text.replace(old, new)
    text = _GROUP_SEPARATOR.sub(",", text).replace("\\!", "")
    text = _THIN_SPACE.sub(_thin_space_to_blank, text).strip()
    text = _strip_math_delimiters(text)
    text = _unwrap_command(text, _BOX_COMMANDS)
    text = _APPROXIMATELY.sub("", text, count=1)
    # a trailing backslash (``42\\``, a stray TeX line break) is no part of any value
    return text.rstrip(".").rstrip("\\").strip()


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
# Fast path: exact comparison of numbers, times, choice letters and "no solution"
# --------------------------------------------------------------------------------------------

# Longer text is not "a plain number with decoration"; the cap also keeps the unanchored
# patterns below from going quadratic on a huge answer in the calling process.
_MAX_NUMBER_CHARS = 100
_VARIABLE_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")  # "x = 5"
_CURRENCY = re.compile(r"^\\?\$\s*")  # "\$5"
# ``^\circ``, ``^{\circ}``, ``\degree``: a degree sign anywhere (``DEGREE_MARK``) or at the end.
DEGREE_MARK = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree(?![A-Za-z])")
_DEGREES = re.compile(r"\s*(?:" + DEGREE_MARK.pattern + ")$")
# A unit may carry a power (cm^2, \text{ m}^{3}) or a "per" part (m/s, \text{km/h}).
_POWER = r"(?:\s*\^\s*\{?\s*\d\s*\}?)?"
_UNIT_IN_TEXT = re.compile(
    r"\s*\\(?:text|textrm|mbox|mathrm)\s*\{\s*([A-Za-z]{1,}[A-Za-z .]*(?:/[A-Za-z]+)?)\}" + _POWER + "$"
)
_UNIT_WORDS = re.compile(r"\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)(?:/[A-Za-z]+)?" + _POWER + r"\.?$")
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
# Scientific notation, blanks removed: "1.25\times10^{-2}", "6.02\cdot10^{23}", "1.25e-2", "3E8".
_SCIENTIFIC = re.compile(
    r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE]([+-]?\d+)|(?:\\times|\\cdot|\*)10\^(?:\{([+-]?\d+)\}|(\d)))"
)
_MAX_EXPONENT = 400  # 10^400 is still cheap as a Fraction; beyond, math-verify (under its deadline) decides
_TEX_FRACTION = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_TEX_FRACTION_SHORT = re.compile(r"([+-]?)\\frac(\d)(\d)")  # \frac12
# "1 1/2", "2\frac{3}{4}", "-1 \frac12": a whole number and a proper fraction.
_MIXED = re.compile(r"([+-]?)(\d+)(?:\s+(\d+)\s*/\s*(\d+)|\s*\\frac\{(\d+)\}\{(\d+)\}|\s*\\frac(\d)(\d))")

# Clock times: "20:34", "8:34:00", "08:34 p.m.", "4:30 \text{ PM}", "\text{4:30 p.m.}".
_TIME = re.compile(
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:\\(?:text|textrm|mathrm|mbox)\s*\{\s*([apAP])\.?\s*[mM]\.?\s*\}"
    r"|([apAP])\.?\s*[mM]\.?)?"
)

# Answers that all say "there is nothing": the empty set and its phrases.
_EMPTY_ANSWERS = frozenset({
    r"\emptyset", r"\{\}", "{}", "none", "nosolution", "nosolutions", "norealsolution", "norealsolutions",
    "nosuchnumber", "nosuchvalue", "doesnotexist", "dne", "emptyset", "theemptyset", "norealroots",
    "noroots", "therearenosolutions", "thereisnosolution", "nosolutionexists", "nosuchvalueexists",
})

_NUMBER_WORDS = {
    word: value for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split())
}
_NUMBER_WORDS.update({word: 10 * (i + 2) for i, word in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())})
_SCALE_WORDS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}

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
    decimal: bool = False  # written with a decimal point (a measured or computed value, maybe rounded)


def fast_compare(pred: str, gold: str, rel_tol: float = DEFAULT_REL_TOL) -> bool | None:
    """Decide cheap cases; ``None`` means "not decidable here, ask math-verify".

    Decides: identical text (after clean-up), multiple-choice letters when the gold is a letter
    A-E, "no solution" phrases, clock times, and pairs of plain numbers.  Numbers are compared
    exactly unless one is written as a decimal; then within ``rel_tol`` relative difference, so
    ``0.0833333333333333`` is ``1/12`` but ``0.333`` is not ``1/3`` (at the default 1e-8).
    """
    pred_text, gold_text = canonical(pred), canonical(gold)
    if pred_text and _squeeze(pred_text) == _squeeze(gold_text):
        return True
    choice = _compare_choices(pred_text, gold_text)
    if choice is not None:
        return choice
    if is_empty_answer(pred_text) and is_empty_answer(gold_text):
        return True
    pred_time, gold_time = as_clock_time(pred_text), as_clock_time(gold_text)
    if pred_time is not None and gold_time is not None:
        return bool(pred_time & gold_time)
    pred_number, gold_number = as_number(pred_text), as_number(gold_text)
    if pred_number is None or gold_number is None:
        return None
    return numbers_match(pred_number, gold_number, rel_tol)


_BLANK_NOT_BETWEEN_DIGITS = re.compile(r"(?<!\d)\s+|\s+(?!\d)")


def _squeeze(text: str) -> str:
    """Drop blanks, except between two digits (``1 1/2`` is a mixed number, not ``11/2``)."""
    return _BLANK_NOT_BETWEEN_DIGITS.sub("", text)


def as_number(text: str) -> _Number | None:
    """Read ``text`` as one plain rational number with optional decoration, else ``None``.

    Decoration that a human grader ignores is removed first: ``x =``, currency, a percent sign
    (remembered), degrees, a unit in words (``5 cm``, ``5 \\text{ apples}``, ``5 \\text{cm}^2``),
    thousands separators, a leading ``+`` and leading zeros.  Mixed numbers (``1 1/2``) and number
    words (``five``, ``twenty-one``) are read as their value.
    """
    text = canonical(text)
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    text = _VARIABLE_ASSIGNMENT.sub("", text, count=1)
    text = _unwrap_command(text, _TEXT_COMMANDS)
    text = _CURRENCY.sub("", text)
    percent = PERCENT.search(text) is not None
    text = _DEGREES.sub("", PERCENT.sub("", text))
    words = _number_words(text)
    if words is not None:
        return _Number(Fraction(words), percent)
    text = _strip_unit(text).strip()
    mixed = _MIXED.fullmatch(text)
    if mixed:
        value = _mixed_value(mixed)
        if value is not None:
            return _Number(value, percent)
    text = text.replace(" ", "")
    value = _parse_rational(text)
    return None if value is None else _Number(value, percent, "." in text)


def vote_key(answer: str) -> str:
    """The spelling-level key maj@n groups on before any comparison: the exact value of a plain number
    (``25``, ``025``, ``25.0``, ``\\frac{1}{2}`` and ``0.5`` share one), else the whitespace-free text."""
    number = as_number(answer)
    if number is not None:
        return f"{number.value}{'%' if number.percent else ''}"
    return re.sub(r"\s+", "", answer).rstrip(".")


def numbers_match(pred: _Number, gold: _Number, rel_tol: float = DEFAULT_REL_TOL) -> bool:
    """Equal values; a percent sign on one side may also mean "divide by 100".

    Gold ``50\\%`` accepts ``50`` (sign omitted) and ``0.5`` (converted); gold ``0.12`` accepts
    ``12\\%``.  Without the question we cannot tell which reading was asked for, so both count.
    When either side is a decimal, "equal" is within ``rel_tol`` (relative).
    """
    tol = rel_tol if (pred.decimal or gold.decimal) else 0.0
    candidates = [(pred.value, gold.value)]
    if pred.percent and not gold.percent:
        candidates.append((pred.value / 100, gold.value))
    if gold.percent and not pred.percent:
        candidates.append((pred.value, gold.value / 100))
    return any(_close(a, b, tol) for a, b in candidates)


def _close(a: Fraction, b: Fraction, rel_tol: float) -> bool:
    if a == b:
        return True
    return rel_tol > 0 and abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))


def is_decimal_number(text: str) -> bool:
    """A plain number written with a decimal point (``0.0833``, ``-1.5``, ``12.5\\%`` is not)."""
    number = as_number(text)
    return number is not None and number.decimal and not number.percent


def _strip_unit(text: str) -> str:
    """Remove a trailing unit: any words inside ``\\text{}``, or bare words of three or more
    letters (or a known two-letter unit), unless a word is mathematics or a hedge."""
    match = _UNIT_IN_TEXT.search(text)
    if match and _is_unit(match.group(1).split()) and _has_value(text[:match.start()]):
        return text[:match.start()]
    match = _UNIT_WORDS.search(text)
    if match:
        words = match.group(1).split()
        if _is_unit(words) and all(len(w) > 2 or w.lower() in _SHORT_UNITS for w in words):
            return text[:match.start()]
    return text


def _has_value(text: str) -> bool:
    return any(char.isdigit() for char in text)


def _is_unit(words: Sequence[str]) -> bool:
    return not _NOT_UNITS.intersection(word.lower().strip(".") for word in words)


def _parse_rational(text: str) -> Fraction | None:
    try:
        if _DECIMAL.fullmatch(text):
            return Fraction(text.replace(",", ""))
        match = _SLASH_FRACTION.fullmatch(text)
        if match:
            return _ratio("", match.group(1), match.group(2))
        match = _SCIENTIFIC.fullmatch(text)
        if match:
            exponent = int(next(g for g in match.groups()[1:] if g is not None))
            return Fraction(match.group(1)) * Fraction(10) ** exponent if abs(exponent) <= _MAX_EXPONENT else None
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


def _mixed_value(match: re.Match[str]) -> Fraction | None:
    """``1 1/2`` -> 3/2; only a proper fraction makes a mixed number (``1 3/2`` is not one)."""
    sign, whole = match.group(1), int(match.group(2))
    numerator, denominator = next(
        (int(match.group(i)), int(match.group(i + 1))) for i in (3, 5, 7) if match.group(i) is not None
    )
    if denominator == 0 or not 0 < numerator < denominator:
        return None
    value = whole + Fraction(numerator, denominator)
    return -value if sign == "-" else value


def _number_words(text: str) -> int | None:
    """``five`` -> 5, ``twenty-one`` -> 21, ``one hundred and five`` -> 105; else ``None``.

    The whole text (a trailing unit word aside: ``five apples``) must be number words.
    """
    words = text.lower().replace("-", " ").split()
    if not words or words[0] not in _NUMBER_WORDS:
        return None
    total, current, used = 0, 0, 0
    for word in words:
        if word in _NUMBER_WORDS:
            current += _NUMBER_WORDS[word]
        elif word in _SCALE_WORDS and used:
            scale = _SCALE_WORDS[word]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total, current = total + max(current, 1) * scale, 0
        elif word == "and" and used:
            pass
        else:
            break
        used += 1
    rest = words[used:]
    if rest and not (_is_unit(rest) and all(len(w) > 2 and w.isalpha() for w in rest)):
        return None
    return total + current


def as_clock_time(text: str) -> frozenset[int] | None:
    """The seconds after midnight ``text`` can mean, if it is a clock time, else ``None``.

    ``8:34 p.m.`` -> {20:34}; ``20:34:00`` -> {20:34}; a time up to 12:59 without a.m./p.m. may be
    either (``4:30`` -> {4:30, 16:30}), so it matches ``4:30 p.m.`` and ``4:30 a.m.``.
    """
    text = _unwrap_command(canonical(text), _TEXT_COMMANDS)
    if len(text) > 40 or ":" not in text:
        return None
    match = _TIME.fullmatch(text.strip())
    if not match:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    meridiem = (match.group(4) or match.group(5) or "").lower()
    if minutes > 59 or seconds > 59:
        return None
    if meridiem:
        if not 1 <= hours <= 12:
            return None
        base = (hours % 12 + (12 if meridiem == "p" else 0)) * 3600 + minutes * 60 + seconds
        return frozenset({base})
    if hours > 24:
        return None
    base = (hours % 24) * 3600 + minutes * 60 + seconds
    return frozenset({base, base + 12 * 3600}) if 1 <= hours <= 12 else frozenset({base})


def is_empty_answer(text: str) -> bool:
    """``\\emptyset``, ``none``, ``no solution``, ``does not exist``, ... (spelling-insensitive)."""
    text = _unwrap_command(canonical(text), _TEXT_COMMANDS)
    if len(text) > 60:
        return False
    key = re.sub(r"[\s.!'\"]", "", text.lower())
    return key in _EMPTY_ANSWERS


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
