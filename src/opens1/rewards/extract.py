"""Answer extraction from model outputs, shared by every verifier.

A thinking model writes `<think> ... </think> final answer`. Only the text after the
last `</think>` is graded: reasoning may try answers out loud, and grading them would
reward guessing. An output that opens `<think>` and never closes it ran out of tokens
mid-thought; it scores 0 (InternBootcamp's format penalty does the same).

Outputs can be huge (a degenerate sampler repeating itself for megabytes), so every
function here works on a bounded tail of the text (`MAX_TAIL` characters) and uses
only linear scans (`str.rfind`, brace counting) or regexes without nested
quantifiers. The answer lives at the end of a response, so the tail is what matters.

Extraction order, most explicit first:
1. the last `\\boxed{...}` (or `\\fbox{...}`), braces matched by counting;
2. the last "Answer: X" / "answer is X" / "final answer: X" line;
3. the whole (stripped) tail, for verifiers that search it themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The answer is in the last few KB of any sane response; bounding the tail keeps
# every verifier O(MAX_TAIL) no matter how long the generation was.
MAX_TAIL = 8192

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"

# "Answer: C", "The final answer is (B).", "answer is 42 kJ/mol" -- captured to end
# of line. `[^\n]{0,400}` is bounded, so no catastrophic backtracking is possible.
_ANSWER_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]{0,4000})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Extracted:
    """What extraction found: `answer` (None if nothing usable), and how (`how`)."""

    answer: str | None
    how: str  # "boxed" | "answer_line" | "tail" | "unclosed_think" | "empty"
    body: str = ""  # the graded text (after </think>, bounded tail)


def strip_thinking(text: str) -> str | None:
    """The graded part of `text`: after the last `</think>`; None if `<think>` never closes."""
    close = text.rfind(_THINK_CLOSE)
    if close >= 0:
        return text[close + len(_THINK_CLOSE):]
    # No close tag: an opened think block means the answer was never given.
    if text.find(_THINK_OPEN) >= 0:
        return None
    return text


def tail(text: str, limit: int = MAX_TAIL) -> str:
    """The last `limit` characters (the answer of a long response is at its end)."""
    return text if len(text) <= limit else text[-limit:]


def find_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}`, with nested braces; None if absent."""
    best = -1
    for macro in ("\\boxed", "\\fbox"):
        best = max(best, text.rfind(macro))
    if best < 0:
        return None
    start = text.find("{", best)
    if start < 0:
        # `\boxed 5` (no braces) is valid LaTeX for a one-token argument.
        rest = text[best:].split(None, 2)
        return rest[1].rstrip("$.") if len(rest) > 1 else None
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i].strip()
    return None  # unbalanced: treat as not found


def find_answer_line(text: str) -> str | None:
    """The value after the last "Answer:" / "answer is" in `text`, trimmed; None if absent."""
    last = None
    for m in _ANSWER_RE.finditer(text):
        last = m
    if last is None:
        return None
    value = last.group(1).strip()
    # "The answer is 42." -> "42"; keep inner dots (3.14, SMILES fragments).
    value = value.rstrip(" \t.;,")
    value = value.strip("*`$ ")  # markdown bold/code and inline-math dollars
    return value or None


def extract(text: str | None, *, require_close: bool = True) -> Extracted:
    """Find the final answer in a model response (see module docstring for the order)."""
    if text is None or not str(text).strip():
        return Extracted(None, "empty")
    body = strip_thinking(str(text))
    if body is None:
        return Extracted(None, "unclosed_think") if require_close else extract(
            str(text).replace(_THINK_OPEN, ""), require_close=True)
    body = tail(body).strip()
    if not body:
        return Extracted(None, "empty")
    boxed = find_boxed(body)
    if boxed:
        return Extracted(boxed, "boxed", body)
    line = find_answer_line(body)
    if line:
        return Extracted(line, "answer_line", body)
    return Extracted(body, "tail", body)
