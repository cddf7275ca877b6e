"""Sequence (protein / DNA) and JSON verifiers.

Sequences are normalised before comparison: FASTA headers, whitespace, digits,
`<FASTA>`/`<DNA>` tags and a trailing stop `*` are dropped, case is ignored. The
score is exact match (1 or 0); `partial=True` gives identity: for equal lengths
the Hamming identity, otherwise difflib's matching-block ratio (a cheap stand-in
for alignment identity; sequences are capped at `MAX_SEQ` so it stays bounded).

JSON answers are found in a ```json fence, else at the first `{`/`[` that
`json.JSONDecoder.raw_decode` accepts. The score is 1 when the value parses,
validates against `schema` (jsonschema, if given) and equals `reference` (if not
None); otherwise 0 with the first failing check as the reason.
"""

from __future__ import annotations

import difflib
import json
import re

from opens1.rewards.extract import extract, strip_thinking, tail
from opens1.rewards.result import VerifyResult

MAX_SEQ = 20_000
_SEQ_TAG_RE = re.compile(r"<(FASTA|DNA|RNA|PROTEIN)>\s*(.*?)\s*</\1>", re.IGNORECASE | re.DOTALL)
_SEQ_RUN_RE = re.compile(r"[A-Za-z*\-]{8,}")
_SEQ_LINE_RE = re.compile(r"[A-Za-z*\-]+")


def normalise_sequence(text: str) -> str:
    # FASTA headers start with ">"; gaps ("-") and the stop "*" are not residues.
    lines = [ln for ln in str(text).splitlines() if not ln.startswith(">")]
    seq = re.sub(r"[^A-Za-z*\-]", "", "".join(lines)).upper().replace("-", "")
    return seq.rstrip("*")


def _find_sequence(prediction) -> tuple[str | None, str]:
    ex = extract(prediction)
    if ex.answer is None:
        return None, ex.how
    tags = _SEQ_TAG_RE.findall(ex.body)
    if tags:
        return normalise_sequence(tags[-1][1]), "tagged"
    if ex.how in ("boxed", "answer_line"):
        return normalise_sequence(ex.answer), ex.how
    # Untagged: consecutive pure-sequence lines form one block (wrapped FASTA);
    # otherwise the longest letter run in prose ("It is ATGGCC...").
    blocks, cur = [], []
    for line in ex.body.splitlines():
        line = line.strip()
        if line and _SEQ_LINE_RE.fullmatch(line):
            cur.append(line)
        else:
            if cur:
                blocks.append("".join(cur))
            cur = []
    if cur:
        blocks.append("".join(cur))
    runs = blocks + _SEQ_RUN_RE.findall(ex.body)
    return (normalise_sequence(max(runs, key=len)), "run") if runs else (None, "no sequence")


def verify_sequence(prediction: str | None, reference: str, partial: bool = False, **opts) -> VerifyResult:
    ref = normalise_sequence(reference)
    if not ref:
        raise ValueError("empty reference sequence")
    pred, how = _find_sequence(prediction)
    if not pred:
        return VerifyResult(0.0, f"no sequence ({how})")
    if pred == ref:
        return VerifyResult(1.0, "identical", pred[:80])
    if not partial:
        return VerifyResult(0.0, "different sequence", pred[:80])
    a, b = pred[:MAX_SEQ], ref[:MAX_SEQ]
    # Same length: point mutations only, Hamming identity is exact and O(n).
    if len(a) == len(b):
        ident = sum(x == y for x, y in zip(a, b)) / len(b)
    else:
        ident = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    return VerifyResult(min(ident, 0.999), f"identity {ident:.3f}", pred[:80])


# --- JSON ---------------------------------------------------------------------

_FENCE_RE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def find_json(text: str):
    """(value, True) for the JSON a response gives, or (None, False)."""
    # A fenced block is the most explicit answer; the last one wins (models revise).
    fences = _FENCE_RE.findall(text)
    for block in reversed(fences):
        try:
            return json.loads(block), True
        except ValueError:
            continue
    dec = json.JSONDecoder()
    # Try each opening bracket, first to last, bounded by the tail length.
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = dec.raw_decode(text, i)
                return value, True
            except ValueError:
                continue
    try:
        return json.loads(text), True
    except ValueError:
        return None, False


def verify_json(prediction: str | None, reference=None, schema: dict | None = None, **opts) -> VerifyResult:
    if prediction is None:
        return VerifyResult(0.0, "no answer (empty)")
    body = strip_thinking(str(prediction))
    if body is None:
        return VerifyResult(0.0, "no answer (unclosed_think)")
    body = tail(body).strip()
    value, ok = find_json(body)
    if not ok:
        return VerifyResult(0.0, "no valid JSON")
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as e:
            return VerifyResult(0.0, f"schema: {e.message[:120]}", json.dumps(value)[:200])
    if reference is not None:
        ref = json.loads(reference) if isinstance(reference, str) else reference
        if value != ref:
            return VerifyResult(0.0, "value differs from reference", json.dumps(value)[:200])
    return VerifyResult(1.0, "valid JSON" + (" matching reference" if reference is not None else ""),
                        json.dumps(value)[:200])
