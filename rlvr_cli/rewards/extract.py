"""Pull the final answer out of a model response.

Two answer conventions are common in math RL data:

* ``\\boxed{...}`` (MATH, DeepSeek-R1 style prompts).  The content can itself contain braces
  (``\\boxed{\\frac{1}{2}}``), so a regular expression is not enough: we scan with a brace counter.
* ``Answer: ...`` on its own line (the DAPO prompt format).

Only the *last* occurrence counts, because models often box intermediate results before the
final one.  Extraction is plain string work; nothing here evaluates model text.
"""

from __future__ import annotations

import re

VALID_MODES: tuple[str, ...] = ("auto", "boxed", "answer_line")

# ``\boxed`` or ``\fbox`` not followed by another letter (so ``\boxedfoo`` is not a box).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_LABEL = re.compile(r"answer\s*:", re.IGNORECASE)
# ``\boxed 5`` (no braces) is legal TeX for a one-token argument; models sometimes write it.
_BARE_TOKEN = re.compile(r"[^\s$]+")
# A math-mode ``$``, not an escaped dollar (``5\$``).
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` naming the valid modes if ``mode`` is not one of them."""
    if mode not in VALID_MODES:
        raise ValueError(f"unknown extract mode {mode!r}; valid modes: {', '.join(VALID_MODES)}")


def extract_answer(text: str, mode: str = "auto") -> str | None:
    """Return the final answer written in ``text``, or ``None`` when there is none.

    ``mode``:
      * ``"boxed"``: content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed).
      * ``"answer_line"``: text after the last ``Answer:`` (case-insensitive) up to the end of that
        line, without surrounding ``$``, ``**`` or a trailing period.
      * ``"auto"``: ``boxed``, falling back to ``answer_line``.

    An empty answer (``\\boxed{}``, ``Answer:`` followed by nothing) counts as no answer.
    """
    check_mode(mode)
    if mode == "boxed":
        return extract_boxed(text)
    if mode == "answer_line":
        return extract_answer_line(text)
    boxed = extract_boxed(text)
    return boxed if boxed is not None else extract_answer_line(text)


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed``/``\\fbox`` in ``text``.

    If the last box is never closed (a response cut off at the length limit) the result is
    ``None`` rather than an earlier box: the model had not finished its final answer, and an
    earlier box is usually an intermediate result, so rewarding it would be wrong.
    """
    last = None
    for last in _BOX_COMMAND.finditer(text):
        pass
    if last is None:
        return None
    return _clean(_read_argument(text, last.end()))


def extract_answer_line(text: str) -> str | None:
    """Text after the last ``Answer:`` label, to the end of its line."""
    last = None
    for last in _ANSWER_LABEL.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():]
    return _clean(rest.split("\n", 1)[0])


def _read_argument(text: str, start: int) -> str | None:
    """Read a TeX macro argument beginning at ``start``: a ``{...}`` group or one bare token."""
    index = start
    while index < len(text) and text[index].isspace():
        index += 1
    if index >= len(text):
        return None
    if text[index] == "{":
        return read_braced(text, index)
    token = _BARE_TOKEN.match(text, index)
    return token.group(0) if token else None


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
    """Strip whitespace, markdown bold, math ``$`` and a trailing period; empty -> ``None``."""
    if answer is None:
        return None
    # A few passes handle nesting such as "**$5$.**"; a fixed count keeps degenerate input
    # ("$.$.$." repeated) from costing quadratic time.
    for _ in range(3):
        answer = _strip_dollars(answer.strip().strip("*").strip()).rstrip(".")
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
