"""Pull the final answer out of a model response.

A data config names how its responses state their answer (``data.extract``, which ``reward.extract``
follows): one extraction mode, or a list of modes tried in order until one finds an answer.

Modes, each reading the **last** occurrence (models often write intermediate results first):

* ``boxed``: the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed: a brace counter,
  not a regular expression).
* ``boxed_all``: the last *run* of boxes, joined as one multi-part answer: ``\\boxed{1}, \\boxed{2}
  and \\boxed{3}`` -> ``1, 2, 3``.  Boxes separated by prose (``\\boxed{3}. Checking again,
  \\boxed{4}``) are not one run, so the last one alone is read.
* ``answer_line``: text after the last ``Answer:`` (DAPO's prompt format) to the end of its line.
* ``hash``: text after the last ``####`` (GSM8K's solution format) to the end of its line.
* ``answer_is``: the rest of the sentence after the last "the answer is" / "the final answer is"
  (GSM8K chain-of-thought few-shot format).
* ``a_line``: the rest of the last line that starts with ``A:`` (question/answer few-shot format).
* ``final_statement``: for a response with no box and no answer line, the answer stated in its
  **final sentence**: what follows the sentence's last "is"/"are"/"equals"/"=" when that is one math
  span or one number ("The answer is 42.", "So the solution set is $y \\geq 3$."), else the
  sentence's last math span ("Therefore, $x = 5$ is the only solution.").  Earlier sentences are
  never read, so an intermediate result is not rewarded, and only the last statement counts, so
  listing candidates gains nothing.  Math-Verify's default extraction (and so TRL's accuracy
  reward) falls back to the last math in the text in the same way.
* ``last_math``: the last math span (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) anywhere,
  for answers stated in prose ("Therefore $x \\geq 5$ is the solution.").  Opt-in.
* ``last_number``: the last number in the response.  Opt-in (it rewards a number that happens
  to come last).  No preset includes either opt-in mode.

A line-type answer that is a sentence (``Answer: The smallest $k$ is 12.``, Minerva's ``Final Answer:
The final answer is $12$. I hope it is correct.``) is read as the statement of its first sentence
(``12``), the same way.

Presets: ``auto`` = ``[boxed_all, answer_line, final_statement]``; ``strict`` = ``[boxed_all,
answer_line]`` (no free-text fallback: a data config that wants format discipline names it);
``gsm8k`` = ``[boxed_all, hash, answer_line, answer_is, a_line, final_statement]``.  Extraction is
plain string work; nothing here evaluates model text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

MODES: tuple[str, ...] = (
    "boxed", "boxed_all", "answer_line", "hash", "answer_is", "a_line", "final_statement", "last_math",
    "last_number",
)
PRESETS: dict[str, tuple[str, ...]] = {
    "auto": ("boxed_all", "answer_line", "final_statement"),
    "strict": ("boxed_all", "answer_line"),
    "gsm8k": ("boxed_all", "hash", "answer_line", "answer_is", "a_line", "final_statement"),
}
VALID_MODES: tuple[str, ...] = ("auto", "strict", "gsm8k", *MODES)
# Modes that read an answer from prose, not from a form the prompt asked for: the ``format`` reward
# term does not count them (see :func:`format_modes`).
FALLBACK_MODES: frozenset[str] = frozenset({"final_statement", "last_math", "last_number"})

# ``\boxed`` or ``\fbox`` not followed by another letter (so ``\boxedfoo`` is not a box).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_LABEL = re.compile(r"answer\s*:", re.IGNORECASE)
_HASH_LABEL = re.compile(r"####")
_ANSWER_IS = re.compile(r"\banswer\s+is\b\s*:?", re.IGNORECASE)
_A_LABEL = re.compile(r"^[ \t*]*A\s*:\**", re.MULTILINE)
# A sentence ends at a period, "!" or "?" followed by white space (a decimal point is not followed by one).
_SENTENCE_END = re.compile(r"[.!?](?=\s)")
# What may stand between two boxes of one multi-part answer: space, punctuation, math delimiters,
# TeX spacing, the words "and"/"or" (bare or in \text{}), a variable's ``x =`` / ``x_2 =`` and a part's
# label (``for (a)``, ``(b)``, ``Part (b):``; a period only right before a label).
# (No blank at a label's end: blanks are the first alternative's, so no run of blanks can be split
# two ways and a failed match stays linear.)
_PART_LABEL = r"(?i:\bfor\s+)?(?i:\bpart\s*)?\([a-h]\):?|(?i:\bpart\s+[a-h]\b):?"
_BOX_SEPARATOR = re.compile(
    r"(?:\s|[,;$]|\\[,;:! ]|\\q?quad\b|\\(?:text|mathrm)\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b"
    r"|\b[A-Za-z](?:_\{?\d+\}?)?\s*=|" + _PART_LABEL + r"|\.(?=\s*(?:" + _PART_LABEL + r")))*"
)
_MAX_BOX_GAP = 200  # a longer stretch between two boxes is prose, whatever it contains
# A number as written in prose: sign, digit groups, decimals, or a slash fraction.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")
# ``\boxed 5`` (no braces) is legal TeX for a one-token argument; models sometimes write it.
_BARE_TOKEN = re.compile(r"[^\s$]+")
# A math-mode ``$``, not an escaped dollar (``5\$``).
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def resolve_modes(mode: str | Sequence[str]) -> tuple[str, ...]:
    """The modes a setting stands for, in order; ``ValueError`` naming the valid ones if unknown.

    ``mode`` is a mode name, a preset name, or a list of them (presets expand in place).
    """
    names = [mode] if isinstance(mode, str) else list(mode)
    if not names:
        raise ValueError(f"empty extract list; valid modes: {', '.join(VALID_MODES)}")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in VALID_MODES:
            raise ValueError(f"unknown extract mode {name!r}; valid modes: {', '.join(VALID_MODES)}")
        for one in PRESETS.get(name, (name,)):
            if one not in out:
                out.append(one)
    return tuple(out)


def format_modes(mode: str | Sequence[str]) -> tuple[str, ...]:
    """The modes of ``mode`` that state an answer in a form (a box, an answer line): the free-text
    fallbacks left out, unless they are all ``mode`` names."""
    modes = resolve_modes(mode)
    return tuple(m for m in modes if m not in FALLBACK_MODES) or modes


def check_mode(mode: str | Sequence[str]) -> None:
    """Raise ``ValueError`` naming the valid modes if ``mode`` is not a mode, preset or list of them."""
    resolve_modes(mode)


def extract_answer(text: str, mode: str | Sequence[str] = "auto") -> str | None:
    """Return the final answer written in ``text``, or ``None`` when there is none.

    ``mode``: see the module docstring; with several modes the first that finds an answer wins.
    An empty answer (``\\boxed{}``, ``Answer:`` followed by nothing) counts as no answer.
    """
    for name in resolve_modes(mode):
        answer = _EXTRACTORS[name](text)
        if answer is not None:
            return answer
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed``/``\\fbox`` in ``text``.

    If the last box is never closed (a response cut off at the length limit) the result is
    ``None`` rather than an earlier box: the model had not finished its final answer, and an
    earlier box is usually an intermediate result, so rewarding it would be wrong.
    """
    boxes = _boxes(text, last_only=True)
    return _clean(boxes[-1][2]) if boxes else None


def extract_boxed_all(text: str) -> str | None:
    """The last run of boxes (see the module docstring) joined with ``", "``."""
    boxes = _boxes(text, last_only=False)
    if not boxes or boxes[-1][2] is None:
        return None
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1]:run[0][0]]
        if box[2] is None or len(gap) > _MAX_BOX_GAP or not _BOX_SEPARATOR.fullmatch(gap):
            break
        run.insert(0, box)
    parts = [part for part in (_clean(box[2]) for box in run) if part is not None]
    return ", ".join(parts) if parts else None


def _boxes(text: str, last_only: bool) -> list[tuple[int, int, str | None]]:
    """``(start, end, content)`` of each box command (content ``None`` if its group never closes)."""
    matches = list(_BOX_COMMAND.finditer(text))
    if last_only:
        matches = matches[-1:]
    out = []
    for match in matches:
        content, end = _read_argument(text, match.end())
        out.append((match.start(), end, content))
    return out


def _after_last(label: re.Pattern[str], text: str) -> str | None:
    last = None
    for last in label.finditer(text):
        pass
    return None if last is None else text[last.end():]


def extract_answer_line(text: str) -> str | None:
    """Text after the last ``Answer:`` label, to the end of its line."""
    rest = _after_last(_ANSWER_LABEL, text)
    return None if rest is None else _line_answer(_clean(rest.split("\n", 1)[0]))


def extract_hash(text: str) -> str | None:
    """Text after the last ``####`` (GSM8K), to the end of its line."""
    rest = _after_last(_HASH_LABEL, text)
    return None if rest is None else _clean(rest.split("\n", 1)[0])


def extract_answer_is(text: str) -> str | None:
    """The rest of the sentence after the last "answer is"."""
    rest = _after_last(_ANSWER_IS, text)
    if rest is None:
        return None
    line = rest.split("\n", 1)[0]
    end = _SENTENCE_END.search(line)
    return _clean(line[: end.start()] if end else line)


def extract_a_line(text: str) -> str | None:
    """The rest of the last line starting with ``A:``."""
    rest = _after_last(_A_LABEL, text)
    return None if rest is None else _line_answer(_clean(rest.split("\n", 1)[0]))


def extract_last_math(text: str) -> str | None:
    """The content of the last math span in ``text`` (opt-in fallback)."""
    last = None
    for last in _math_spans(text):
        pass
    return None if last is None else _clean(last[2])


def _math_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, content)`` of each math span (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``), in order.

    One left-to-right scan: each search for a closing delimiter either succeeds (and the scan
    jumps past it) or proves that delimiter absent for the rest of the text, so the cost is linear
    even on adversarial input (``\\(`` repeated 50,000 times).
    """
    index, absent = 0, set()
    while index < len(text):
        char = text[index]
        if char == "\\":
            closer = {"(": "\\)", "[": "\\]"}.get(text[index + 1:index + 2])
            if closer and closer not in absent:
                end = text.find(closer, index + 2)
                if end >= 0:
                    yield index, end + 2, text[index + 2:end]
                    index = end + 2
                    continue
                absent.add(closer)
            index += 2
            continue
        if char == "$":
            delimiter = "$$" if text.startswith("$$", index) else "$"
            end = -1 if delimiter in absent else _find_unescaped(text, delimiter, index + len(delimiter))
            if end < 0:
                absent.add(delimiter)
                index += len(delimiter)
                continue
            yield index, end + len(delimiter), text[index + len(delimiter):end]
            index = end + len(delimiter)
            continue
        index += 1


# Where a sentence ends, in text whose math spans are masked: ".", "!" or "?" before a blank, or a
# blank line.  What states a value in a sentence: "is", "are", "equals", "equal to", "=".
_SENTENCE_BREAK = re.compile(r"[.!?](?=\s)|\n[ \t]*\n")
_COPULA = re.compile(r"\b(?:is|are|was|were|be|equals|equal\s+to)\b|=", re.IGNORECASE)
_MASK = "\x00"  # stands for every character of a math span in the masked text
# One number as a sentence states it, with at most one word after it (a unit: "18 dollars").
_STATED_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?(?:\s+[A-Za-z]+)?")


def extract_final_statement(text: str) -> str | None:
    """The answer stated in the final sentence of ``text`` (see the module docstring), else ``None``."""
    masked, spans = _masked(text)
    end = len(masked.rstrip().rstrip(".!?*").rstrip())
    start = 0
    for start_match in _SENTENCE_BREAK.finditer(masked, 0, end):
        start = start_match.end()
    return _statement(text, masked, spans, start, end, strict=True)


def _masked(text: str) -> tuple[str, list[tuple[int, int, str]]]:
    """``text`` with each math span's characters replaced by :data:`_MASK`, and the spans."""
    spans = list(_math_spans(text))
    pieces, at = [], 0
    for start, end, _ in spans:
        pieces += [text[at:start], _MASK * (end - start)]
        at = end
    pieces.append(text[at:])
    return "".join(pieces), spans


def _statement(text: str, masked: str, spans: list[tuple[int, int, str]], start: int, end: int,
               strict: bool) -> str | None:
    """The value the sentence ``text[start:end]`` states: what follows its last copula when that is one
    math span or one number (``strict``) or anything (not ``strict``), else its last math span."""
    copula = None
    for copula in _COPULA.finditer(masked, start, end):
        pass
    if copula is not None:
        rest = masked[copula.end():end].strip(" \t\n:*,")
        value = _clean(text[copula.end():end])
        if value is not None and (not strict or _one_value(rest)):
            return value
    inside = [span for span in spans if start <= span[0] and span[1] <= end]
    return _clean(inside[-1][2]) if inside else None


def _one_value(masked_rest: str) -> bool:
    """One math span, or one number (with a unit word at most), and nothing else."""
    if masked_rest and set(masked_rest) == {_MASK}:
        return True
    return _MASK not in masked_rest and _STATED_NUMBER.fullmatch(masked_rest) is not None


# A word of prose before a copula: the answer is a sentence, not a value (two linear searches: one
# pattern with a gap between the two would rescan the rest of the line from every word).
_VERB = re.compile(r"\b(?:is|are|was|were|equals|equal\s+to)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]{2,}")


def _line_answer(answer: str | None) -> str | None:
    """A line-type answer that is a sentence (``The smallest $k$ is 12. I hope it is correct.``) ->
    the statement of its first sentence (``12``); any other answer unchanged."""
    if answer is None:
        return None
    masked, spans = _masked(answer)
    verb = _VERB.search(masked)
    if verb is None or _WORD.search(masked, 0, verb.start()) is None:
        return answer
    first = _SENTENCE_BREAK.search(masked)
    end = first.start() if first else len(masked)
    return _statement(answer, masked, spans, 0, end, strict=False) or answer


def _find_unescaped(text: str, delimiter: str, start: int) -> int:
    end = text.find(delimiter, start)
    while end > 0 and text[end - 1] == "\\":
        end = text.find(delimiter, end + 1)
    return end


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (opt-in fallback)."""
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return None if last is None else last.group(0).replace(" ", "")


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed, "boxed_all": extract_boxed_all, "answer_line": extract_answer_line,
    "hash": extract_hash, "answer_is": extract_answer_is, "a_line": extract_a_line,
    "final_statement": extract_final_statement, "last_math": extract_last_math, "last_number": extract_last_number,
}


def _read_argument(text: str, start: int) -> tuple[str | None, int]:
    """Read a TeX macro argument beginning at ``start``: a ``{...}`` group or one bare token.
    Returns ``(content, end index)``; content ``None`` if there is no (finished) argument."""
    index = start
    while index < len(text) and text[index].isspace():
        index += 1
    if index >= len(text):
        return None, len(text)
    if text[index] == "{":
        content = read_braced(text, index)
        return content, (len(text) if content is None else index + len(content) + 2)
    token = _BARE_TOKEN.match(text, index)
    return (token.group(0), token.end()) if token else (None, index)


def read_braced(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at ``open_index``; ``None`` if it never closes.

    A backslash escapes the next character, so ``\\{`` and ``\\}`` (literal braces, as in the set
    ``\\{1,2\\}``) do not change the depth.
    """
    depth = 0
    index = open_index
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1:index]
        index += 1
    return None


def _clean(answer: str | None) -> str | None:
    """Strip whitespace, markdown bold, math ``$``, a trailing period and a trailing backslash (``42\\``,
    a stray TeX line break); empty -> ``None``."""
    if answer is None:
        return None
    # A few passes handle nesting such as "**$5$.**"; a fixed count keeps degenerate input
    # ("$.$.$." repeated) from costing quadratic time.
    for _ in range(3):
        answer = _strip_dollars(answer.strip().strip("*").strip()).rstrip(".")
        answer = answer.rstrip("\\").rstrip()
    return answer or None


def _strip_dollars(answer: str) -> str:
    """``$x$``, ``$$x$$``, ``$x`` -> ``x``; ``$1$ and $2$`` (two math spans) is left alone.

    A trailing escaped dollar (``5\\$``) is text and stays.  Written as a loop rather than a
    regular expression so that a long run of ``$`` cannot make it quadratic.
    """
    inner = answer.lstrip("$")
    end = len(inner)
    while end > 0 and inner[end - 1] == "$" and not (end > 1 and inner[end - 2] == "\\"):
        end -= 1
    inner = inner[:end]
    return answer if _UNESCAPED_DOLLAR.search(inner) else inner.strip()
