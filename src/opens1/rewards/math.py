"""Math, numeric (with units) and multiple-choice verifiers.

- `math`: symbolic equivalence through math-verify (LaTeX -> sympy; fractions,
  radicals, tuples, intervals, "x = 2"). math-verify bounds its own parse/compare
  with SIGALRM timeouts, which only work in the main thread; elsewhere we pass
  `None` and rely on the bounded answer length (`MAX_MATH_CHARS`) instead.
- `number`: a float within `rel_tol` (default 1e-4) of the reference, after
  converting units when both sides give one (see units.py).
- `choice`: one option letter, found in "The answer is (B)", "Answer: C",
  `\\boxed{D}`, or a lone letter.
"""

from __future__ import annotations

import logging
import math as _math
import re
import threading

from opens1.rewards.extract import extract
from opens1.rewards.result import VerifyResult
from opens1.rewards.units import Unit, clean_latex, parse_unit

# Longer "answers" are almost surely not a final answer; parsing them with sympy
# could take seconds, so they are rejected up front.
MAX_MATH_CHARS = 512


def _timeout() -> int | None:
    # SIGALRM only works in the main thread; elsewhere only MAX_MATH_CHARS bounds the work
    # (a pathological power tower can still be slow there: run RL scoring in processes).
    return 5 if threading.current_thread() is threading.main_thread() else None


class _QuietNoTimeout(logging.Filter):
    """math-verify warns on every call made without a timeout; once is documented above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_QuietNoTimeout())


def _mv_parse(text: str):
    from math_verify import parse  # lazy: sympy import costs ~0.3 s

    # Bare answers ("1/2", "\frac{1}{2}") need math delimiters for the LaTeX extractor.
    # An escaped dollar (\\$36, MATH's money answers) is not a math delimiter.
    has_delim = re.search(r"(?<!\\)\$", text) is not None
    wrapped = text if (has_delim or "\\boxed" in text) else f"${text}$"
    return parse(wrapped, parsing_timeout=_timeout())


def verify_math(prediction: str | None, reference, **opts) -> VerifyResult:
    ex = extract(prediction)
    if ex.answer is None:
        return VerifyResult(0.0, f"no answer ({ex.how})")
    cand = ex.answer
    if ex.how == "tail":
        # No explicit answer marker: let math-verify pick from the last lines.
        cand = ex.body[-MAX_MATH_CHARS:]
    if len(cand) > MAX_MATH_CHARS:
        return VerifyResult(0.0, "answer too long")
    from math_verify import verify as mv_verify

    gold = _mv_parse(str(reference))
    if not gold:
        raise ValueError(f"math reference {reference!r} could not be parsed")
    pred = _mv_parse(cand)
    if not pred:
        return VerifyResult(0.0, f"unparseable answer {cand[:60]!r}", cand)
    ok = mv_verify(gold, pred, timeout_seconds=_timeout())
    return VerifyResult(1.0 if ok else 0.0, "equivalent" if ok else f"not equal to {reference}", cand)


# --- numbers with units -------------------------------------------------------

# 1,234.5 | -3.2e-5 | .5 ; followed optionally by "× 10^{-5}" (written out or LaTeX).
_NUM_RE = re.compile(
    r"(?<![\w.^+\-])([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?)"
    r"(?:\s*(?:\*|x|×|\\times|\\cdot)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?)?"
)
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")


_STOPWORDS = {"in", "at", "for", "is", "are", "and", "or", "of", "to", "the", "with", "which", "from", "so",
              "because", "since", "when", "if", "as", "was", "be", "this", "that", "on", "by"}


def parse_quantity(text: str, last: bool = False) -> tuple[float, Unit | None] | None:
    """First (or last) number in `text` and the unit written right after it, if any."""
    s = clean_latex(_FRAC_RE.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text))
    matches = list(_NUM_RE.finditer(s))
    if not matches:
        return None
    m = matches[-1] if last else matches[0]
    value = float(m.group(1).replace(",", ""))
    if m.group(2):
        value *= 10.0 ** int(m.group(2))
    rest = s[m.end():]
    frac = re.match(r"\s*/\s*(\d+(?:\.\d+)?)(?![\w])", rest)
    if frac and float(frac.group(1)) != 0:  # "3/4"
        value /= float(frac.group(1))
        rest = rest[frac.end():]
    # The unit is the longest run of words after the number that parses as one
    # ("kJ/mol is the enthalpy" -> kJ/mol; "dollars" -> no unit).
    words = rest.strip().rstrip(".;,").split()[:6]
    for i, w in enumerate(words):  # prose after the unit ("kJ/mol at 298 K") is not part of it
        if w.lower().strip(".,;") in _STOPWORDS:
            words = words[:i]
            break
    for k in range(len(words), 0, -1):
        u = parse_unit(" ".join(words[:k]).rstrip(".;,)"))
        if u is not None:
            return value, u
    return value, None


def _reference_quantity(reference, unit_opt) -> tuple[float, Unit | None]:
    if isinstance(reference, dict):
        value, unit = float(reference["value"]), reference.get("unit")
    elif isinstance(reference, (int, float)):
        value, unit = float(reference), None
    else:
        q = parse_quantity(str(reference))
        if q is None:
            raise ValueError(f"number reference {reference!r} has no number")
        value, u = q
        return value, (parse_unit(unit_opt) if unit_opt else u)
    unit = unit_opt or unit
    if unit:
        u = parse_unit(unit)
        if u is None:
            raise ValueError(f"unknown unit {unit!r} in number reference")
        return value, u
    return value, None


def verify_number(prediction: str | None, reference, *, rel_tol: float = 1e-4, abs_tol: float = 1e-9,
                  unit: str | None = None, **opts) -> VerifyResult:
    ex = extract(prediction)
    if ex.answer is None:
        return VerifyResult(0.0, f"no answer ({ex.how})")
    ref_value, ref_unit = _reference_quantity(reference, unit)
    q = parse_quantity(ex.answer, last=(ex.how == "tail"))
    if q is None:
        return VerifyResult(0.0, f"no number in {ex.answer[:60]!r}", ex.answer)
    value, pred_unit = q
    if ref_unit is not None and pred_unit is not None and not (
            pred_unit.dimensionless and pred_unit.factor == 1.0):
        if pred_unit.dim != ref_unit.dim:
            return VerifyResult(0.0, "unit has the wrong dimension", ex.answer)
        value = value * pred_unit.factor / ref_unit.factor  # into the reference unit
    ok = _math.isclose(value, ref_value, rel_tol=rel_tol, abs_tol=abs_tol)
    return VerifyResult(1.0 if ok else 0.0, f"{value:g} vs {ref_value:g}", ex.answer)


# --- multiple choice ----------------------------------------------------------

# "A and B", "(A), (C)", "B/D": hedging over several options is not an answer.
_HEDGE_RE = re.compile(r"^\(?\s*[A-Za-z]\s*\)?\s*(?:,|and|or|&|/|\+)\s*\(?\s*[A-Za-z]\s*\)?(?:[\s.,;:)]|$)",
                       re.IGNORECASE)
_LETTER_RE = re.compile(r"^\(?\s*\**\s*([A-Za-z])\s*\**\s*\)?(?:[.:)\s]|$)")
_PAREN_LETTER_RE = re.compile(r"\(([A-Z])\)|\b([A-Z])\b")


def _choice_letter(ex) -> str | None:
    if ex.how in ("boxed", "answer_line"):
        text = clean_latex(ex.answer).strip()
        # "Answer: (B) 42" / "Answer: B." / "\boxed{C}" / "option D"
        text = re.sub(r"^(?:option|choice)\s+", "", text, flags=re.IGNORECASE)
        if _HEDGE_RE.match(text):
            return None
        m = _LETTER_RE.match(text)
        return m.group(1).upper() if m else None
    # No marker: accept a response that is just a letter, e.g. "B" or "(B)".
    m = _LETTER_RE.match(ex.body.strip())
    if m and len(ex.body.strip()) <= 4:
        return m.group(1).upper()
    return None


def verify_choice(prediction: str | None, reference, **opts) -> VerifyResult:
    ref = str(reference).strip().strip("()").upper()
    if len(ref) != 1 or not ref.isalpha():
        raise ValueError(f"choice reference must be one letter, got {reference!r}")
    ex = extract(prediction)
    if ex.answer is None:
        return VerifyResult(0.0, f"no answer ({ex.how})")
    letter = _choice_letter(ex)
    if letter is None:
        return VerifyResult(0.0, "no option letter found", ex.answer)
    ok = letter == ref
    return VerifyResult(1.0 if ok else 0.0, f"chose {letter}, reference {ref}", letter)
