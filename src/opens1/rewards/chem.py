"""Chemistry verifiers: SMILES, molecular formula, reaction.

Equivalence is decided by RDKit, never by string match: two SMILES are the same
molecule iff their canonical SMILES agree (atom maps cleared; stereo only when
`stereo=True`). Canonical SMILES sort fragments, so "O.CCO" equals "CCO.O".
`partial=True` gives Morgan-fingerprint (r=2, 2048 bits) Tanimoto credit, as
SMolInstruct's molecule-generation metrics do.

Formulas are compared as element-count multisets, so condensed forms
(C2H5OH = C2H6O), parentheses (Ca(OH)2), brackets, LaTeX subscripts and hydrates
(CuSO4·5H2O) all reduce to the same counts. `hydrate="ignore"` drops the water
of crystallisation on both sides.

Answers are located with the shared extractor (after `</think>`, `\\boxed{}`,
"Answer:"), then by `<SMILES>` tags, then by scanning the tail for the last
whitespace token that RDKit parses ("The product is CC(=O)O." -> "CC(=O)O").
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import rdFingerprintGenerator

from opens1.rewards.extract import extract
from opens1.rewards.result import VerifyResult
from opens1.rewards.units import clean_latex

RDLogger.DisableLog("rdApp.*")  # unparseable model output is expected, not log-worthy

MAX_SMILES = 2000  # longer strings are not a molecule a model should answer with
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
_SMILES_TAG_RE = re.compile(r"<SMILES>\s*([^<\s]{1,2000})\s*</SMILES>", re.IGNORECASE)
_STRIP = "\"'`*.,;:!?"


# --- SMILES -------------------------------------------------------------------

@lru_cache(maxsize=65536)
def mol_from_smiles(smiles: str):
    """RDKit Mol or None; cached because verifiers see the same references repeatedly."""
    if not smiles or len(smiles) > MAX_SMILES:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


@lru_cache(maxsize=65536)
def canonical_smiles(smiles: str, stereo: bool = False) -> str | None:
    """Canonical SMILES with atom maps cleared (None if RDKit cannot parse it)."""
    mol = mol_from_smiles(smiles)
    if mol is None:
        return None
    if any(a.GetAtomMapNum() for a in mol.GetAtoms()):
        # Copy first: the parsed Mol is shared through the lru_cache.
        mol = Chem.Mol(mol)
        for atom in mol.GetAtoms():
            atom.SetAtomMapNum(0)
    return Chem.MolToSmiles(mol, isomericSmiles=stereo, canonical=True)


def tanimoto(a: str, b: str) -> float:
    ma, mb = mol_from_smiles(a), mol_from_smiles(b)
    if ma is None or mb is None:
        return 0.0
    return DataStructs.TanimotoSimilarity(_MORGAN.GetFingerprint(ma), _MORGAN.GetFingerprint(mb))


def _tokens_from_end(text: str, max_tokens: int = 64):
    """Whitespace tokens of `text`, last first, stripped of quoting punctuation."""
    toks = text.split()
    for tok in reversed(toks[-max_tokens:]):
        tok = tok.strip(_STRIP)
        if tok:
            yield tok


def find_smiles(text: str, accept=None) -> str | None:
    """The SMILES a response answers with: tagged, the whole answer, or the last parseable token."""
    accept = accept or (lambda s: mol_from_smiles(s) is not None)
    tags = _SMILES_TAG_RE.findall(text)
    if tags:
        return tags[-1]
    # A one-token answer is taken whole (it may end in "." as a sentence, which RDKit
    # would otherwise read as an empty fragment).
    whole = text.strip().strip(_STRIP)
    if whole and " " not in whole and accept(whole):
        return whole
    for tok in _tokens_from_end(text):
        if accept(tok):
            return tok
    return None


def _answer_text(prediction) -> tuple[str | None, str]:
    ex = extract(prediction)
    if ex.answer is None:
        return None, ex.how
    # A tagged SMILES anywhere in the graded text is the most explicit answer.
    if ex.how != "boxed" and "<SMILES>" in ex.body.upper():
        return ex.body, "tagged"
    return ex.answer, ex.how


def verify_smiles(prediction: str | None, reference: str, stereo: bool = False,
                  partial: bool = False, **opts) -> VerifyResult:
    ref = canonical_smiles(str(reference).strip(), stereo)
    if ref is None:
        raise ValueError(f"reference SMILES {reference!r} does not parse")
    text, how = _answer_text(prediction)
    if text is None:
        return VerifyResult(0.0, f"no answer ({how})")
    cand = find_smiles(text)
    if cand is None:
        return VerifyResult(0.0, "no parseable SMILES in the answer")
    pred = canonical_smiles(cand, stereo)
    if pred == ref:
        return VerifyResult(1.0, "same molecule", cand)
    if partial:
        # Capped below 1: different molecules can share a fingerprint (e.g. stereoisomers),
        # and only the right molecule may earn full reward.
        sim = tanimoto(cand, str(reference).strip())
        return VerifyResult(round(min(sim, 0.999), 6), f"Tanimoto {sim:.3f}", cand)
    return VerifyResult(0.0, "different molecule", cand)


# --- molecular formula ----------------------------------------------------------

_ELEMENTS = frozenset(Chem.GetPeriodicTable().GetElementSymbol(z) for z in range(1, 119))
_FORMULA_TOKEN_RE = re.compile(r"([A-Z][a-z]?)|(\d+)|([(\[{])|([)\]}])|(\s+)")
_HYDRATE_SPLIT_RE = re.compile(r"\s*[·•∙⋅*]\s*|\.(?=\d*\s*H2O)")
_CHARGE_RE = re.compile(r"(\^?\(?\d*[+-]\)?)$")


def _parse_group(s: str) -> Counter | None:
    """Element counts of one formula part (no hydrate dot); None if malformed."""
    stack: list[Counter] = [Counter()]
    last: Counter | None = None  # what the next number multiplies
    pos = 0
    while pos < len(s):
        m = _FORMULA_TOKEN_RE.match(s, pos)
        if not m:
            return None
        el, num, opn, cls, _ = m.groups()
        if el:
            if el not in _ELEMENTS:
                return None
            last = Counter({el: 1})
            stack[-1].update(last)
        elif num:
            # A count multiplies the preceding element or group (already added once).
            if last is None:
                return None
            n = int(num)
            for k, v in last.items():
                stack[-1][k] += v * (n - 1)
            last = None
        elif opn:
            stack.append(Counter())
            last = None
        elif cls:
            if len(stack) == 1:
                return None
            inner = stack.pop()
            stack[-1].update(inner)
            last = inner
        pos = m.end()
    if len(stack) != 1 or not stack[0]:
        return None
    return stack[0]


def parse_formula(text: str, hydrate: str = "strict") -> Counter | None:
    """Element counts of a formula (`C2H5OH`, `Ca(OH)2`, `CuSO4·5H2O`, `C_{2}H_{6}O`)."""
    s = clean_latex(text).replace("_", "").replace(" ", "")
    if not s or len(s) > 200:
        return None
    # Charges ("SO4^2-", "NH4+") do not change element counts: drop them.
    s = _CHARGE_RE.sub("", s) if re.search(r"[A-Za-z\)\]]\^?\(?\d*[+-]\)?$", s) else s
    total: Counter = Counter()
    for i, part in enumerate(p for p in _HYDRATE_SPLIT_RE.split(s) if p):
        m = re.match(r"(\d+)(?=[A-Z(\[])", part)
        mult = 1
        if m:  # "5H2O": a leading multiplier
            mult, part = int(m.group(1)), part[m.end():]
        counts = _parse_group(part)
        if counts is None:
            return None
        # Water of crystallisation is every part after the first that is only H and O.
        if i > 0 and hydrate == "ignore" and set(counts) <= {"H", "O"}:
            continue
        for k, v in counts.items():
            total[k] += v * mult
    return total or None


def _looks_like_formula(tok: str) -> bool:
    counts = parse_formula(tok)
    # A lone capitalised word ("He", "In") is prose unless it carries a count.
    return counts is not None and (any(c.isdigit() for c in tok) or sum(1 for c in tok if c.isupper()) >= 2)


def verify_formula(prediction: str | None, reference: str, hydrate: str = "strict", **opts) -> VerifyResult:
    if hydrate not in ("strict", "ignore"):
        raise ValueError(f"hydrate must be 'strict' or 'ignore', got {hydrate!r}")
    ref = parse_formula(str(reference), hydrate)
    if ref is None:
        raise ValueError(f"reference formula {reference!r} does not parse")
    ex = extract(prediction)
    if ex.answer is None:
        return VerifyResult(0.0, f"no answer ({ex.how})")
    cand = ex.answer.strip().strip(_STRIP)
    counts = parse_formula(cand, hydrate) if ex.how != "tail" else None
    if counts is None:
        tok = next((t for t in _tokens_from_end(ex.answer) if _looks_like_formula(t)), None)
        if tok is None:
            return VerifyResult(0.0, "no formula in the answer")
        cand, counts = tok, parse_formula(tok, hydrate)
    ok = counts == ref
    return VerifyResult(1.0 if ok else 0.0, "same element counts" if ok else "different element counts", cand)


# --- reactions ------------------------------------------------------------------

def _fragments(smiles_set: str) -> list[str] | None:
    """Sorted canonical molecules of a "."-separated set; None if any fails to parse."""
    out = []
    for frag in smiles_set.split("."):
        if not frag:
            continue
        c = canonical_smiles(frag)
        if c is None:
            return None
        out.extend(c.split("."))
    return sorted(out) if out else None


def _sides(text: str) -> tuple[str | None, str]:
    """`reactants>agents>products` -> (reactants, products); a plain set -> (None, set)."""
    # Reaction SMILES put agents (solvents, catalysts) between the two ">"; they are
    # not part of the answer, so they are ignored.
    if ">" in text:
        parts = text.split(">")
        if len(parts) == 3:
            return parts[0], parts[2]
        raise ValueError(f"malformed reaction SMILES {text[:80]!r}")
    return None, text


def _multiset_score(pred: list[str], ref: list[str], partial: bool) -> float:
    if pred == ref:
        return 1.0
    if not partial:
        return 0.0
    a, b = Counter(pred), Counter(ref)
    inter, union = sum((a & b).values()), sum((a | b).values())
    return min(inter / union, 0.999) if union else 0.0


def _looks_like_reaction(tok: str) -> bool:
    try:
        left, right = _sides(tok)
    except ValueError:
        return False
    return _fragments(right) is not None and (left is None or _fragments(left) is not None)


def verify_reaction(prediction: str | None, reference: str, partial: bool = False, side: str = "products",
                    **opts) -> VerifyResult:
    """`reference`: a full reaction (`r>a>p`, both sides must match) or a plain molecule set.
    For a plain set, a predicted full reaction is graded on its `side` ("products" for
    forward prediction, "reactants" for retrosynthesis)."""
    if side not in ("products", "reactants"):
        raise ValueError(f"side must be 'products' or 'reactants', got {side!r}")
    ref_left, ref_right = _sides(str(reference).strip())
    ref_r = _fragments(ref_right)
    ref_l = _fragments(ref_left) if ref_left is not None else None
    if ref_r is None or (ref_left is not None and ref_l is None):
        raise ValueError(f"reference reaction {reference!r} does not parse")
    text, how = _answer_text(prediction)
    if text is None:
        return VerifyResult(0.0, f"no answer ({how})")
    cand = find_smiles(text, accept=_looks_like_reaction)
    if cand is None:
        return VerifyResult(0.0, "no parseable reaction or molecule set")
    left, right = _sides(cand)
    if ref_left is None and left is not None and side == "reactants":
        right = left  # a retrosynthesis answer written as a full reaction: grade its reactants
    score = _multiset_score(_fragments(right), ref_r, partial)
    if ref_l is not None and left is not None:
        # Both sides given: both must match (mean of the two for partial credit).
        score = (score + _multiset_score(_fragments(left), ref_l, partial)) / 2 if partial else (
            score if _fragments(left) == ref_l else 0.0)
    reason = "same molecules" if score == 1.0 else "different molecules"
    return VerifyResult(score, reason, cand)
