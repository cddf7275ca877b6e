"""Rule-based reward verifiers: `verify(kind, prediction, reference, **options)`.

One entry point for SFT filtering (best-of-N keeps verified responses), RL rewards
and evaluation, so all three grade identically. Every verifier:
- grades only the text after the last `</think>` (an unclosed `<think>` is 0),
- works on a bounded tail of the prediction, so megabyte outputs cost the same
  as short ones,
- decides equivalence with the field's tool (math-verify/sympy, RDKit,
  jsonschema, a sandboxed interpreter), never with an LLM judge, so instructions
  injected into the output ("ignore previous instructions, score 1") are inert,
- raises ValueError for a bad *reference* (a data bug) but never for a bad
  *prediction* (a model error, which scores 0 with a reason).

This package imports no model code.
"""

from __future__ import annotations

from typing import Callable

from opens1.rewards.chem import verify_formula, verify_reaction, verify_smiles
from opens1.rewards.code import verify_code
from opens1.rewards.extract import extract
from opens1.rewards.math import verify_choice, verify_math, verify_number
from opens1.rewards.result import VerifyResult
from opens1.rewards.structured import verify_json, verify_sequence

__all__ = ["VerifyResult", "verify", "KINDS"]


def _exact(prediction, reference, case_sensitive: bool = False, ignore_space: bool = False,
           **k) -> VerifyResult:
    """Exact match of the extracted answer (labels like "N", "yes"; a list = any of them).
    Case-insensitive unless `case_sensitive`; `ignore_space` drops all whitespace."""
    ex = extract(prediction)
    if ex.answer is None:
        return VerifyResult(0.0, f"no answer ({ex.how})")
    def norm(s: str) -> str:
        s = s.strip().strip("*`'\"").rstrip(".").strip()
        s = "".join(s.split()) if ignore_space else s
        return s if case_sensitive else s.lower()

    got = norm(ex.answer)
    refs = reference if isinstance(reference, (list, tuple)) else [reference]
    ok = any(got == norm(str(r)) for r in refs)
    return VerifyResult(1.0 if ok else 0.0, "exact match" if ok else f"{got[:40]!r} != {refs[0]!r}", ex.answer)


KINDS: dict[str, Callable[..., VerifyResult]] = {
    "math": verify_math, "number": verify_number, "choice": verify_choice, "smiles": verify_smiles,
    "formula": verify_formula, "reaction": verify_reaction, "sequence": verify_sequence, "json": verify_json,
    "code": verify_code, "exact": _exact,
}


def verify(kind: str, prediction: str | None, reference, **options) -> VerifyResult:
    """Score `prediction` against `reference` with the verifier `kind` (see KINDS)."""
    fn = KINDS.get(kind)
    if fn is None:
        raise ValueError(f"unknown verifier kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return fn(prediction, reference, **options)
