"""Validity checks for chemistry and biology records: SMILES (RDKit) and protein/DNA sequences.

Scientific corpora carry domain strings that a text filter cannot judge: a SMILES that RDKit cannot
parse, or a "protein" with digits in it, teaches the model broken chemistry. Intern-S1 wraps such
strings in tags (<SMILES>, <FASTA>, ... see docs/tokenizer.md); this module finds them in
text or in record fields and checks each one.

- `smiles_valid(s)`: RDKit parses it with sanitisation (valences, aromaticity), logs silenced;
  `reaction_valid(r)`: "reactants>agents>products" with every part a valid SMILES.
- `protein_valid(s)` / `dna_valid(s)`: alphabet checks (IUPAC one-letter codes; a trailing stop
  `*` is allowed for proteins, as in predicted proteomes; `strict` allows only the canonical 20 / ACGT).
- `check_record(rec)` -> `ValidityResult(ok, n_checked, errors)` over the fields `smiles`,
  `reaction`, `sequence`/`protein`/`dna` and tagged spans in `text`. Records without any are
  trivially ok.

Design choice: sequences of unknown type in a `sequence` field are judged by alphabet: only
nucleotide letters -> DNA, else protein. A protein made only of A, C, G, T letters is possible but
rare enough (<1e-30 for 50 residues) to ignore.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

PROTEIN_STRICT = frozenset("ACDEFGHIKLMNPQRSTVWY")
PROTEIN_IUPAC = PROTEIN_STRICT | frozenset("BZXUO")  # ambiguous (B, Z, X) + selenocysteine, pyrrolysine
DNA_STRICT = frozenset("ACGT")
DNA_IUPAC = DNA_STRICT | frozenset("NRYSWKMBDHV")
_TAGGED = re.compile(r"<(SMILES|FASTA|PROTEIN|DNA)>\s*(.*?)\s*</\1>", re.S)


@lru_cache(maxsize=1)
def _rdkit():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # a corpus has millions of bad SMILES: errors go to the result
    return Chem


def smiles_valid(smiles: str) -> bool:
    """True when RDKit parses and sanitises `smiles` (empty or whitespace-containing is invalid)."""
    s = smiles.strip()
    if not s or any(c.isspace() for c in s):
        return False
    return _rdkit().MolFromSmiles(s) is not None


def reaction_valid(rxn: str) -> bool:
    """Reaction SMILES "reactants>agents>products" (agents may be empty, "A>>B"): reactants and
    products non-empty and every part a valid (dot-joined) SMILES; atom maps are fine."""
    parts = rxn.strip().split(">")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        return False
    return all(smiles_valid(p) for p in parts if p)


def _clean_seq(seq: str) -> str:
    lines = [ln for ln in seq.strip().splitlines() if not ln.startswith(">")]  # drop FASTA headers
    return "".join("".join(lines).split()).upper()


def protein_valid(seq: str, strict: bool = False, min_len: int = 2) -> bool:
    s = _clean_seq(seq)
    if s.endswith("*"):
        s = s[:-1]
    return len(s) >= min_len and set(s) <= (PROTEIN_STRICT if strict else PROTEIN_IUPAC)


def dna_valid(seq: str, strict: bool = False, min_len: int = 2) -> bool:
    s = _clean_seq(seq).replace("U", "T")  # RNA written with U is still a nucleotide sequence
    return len(s) >= min_len and set(s) <= (DNA_STRICT if strict else DNA_IUPAC)


def sequence_valid(seq: str) -> bool:
    """A sequence of unknown type: DNA if it only uses nucleotide codes, else a protein."""
    s = _clean_seq(seq)
    return dna_valid(s) if set(s) <= DNA_IUPAC | {"U"} else protein_valid(s)


@dataclass
class ValidityResult:
    ok: bool
    n_checked: int
    errors: list[str] = field(default_factory=list)


def check_record(rec: dict) -> ValidityResult:
    """Check every SMILES / sequence found in a record's fields and tagged text spans."""
    checks: list[tuple[str, str]] = []
    for key, kind in (("smiles", "SMILES"), ("reaction", "REACTION"), ("sequence", "SEQ"), ("protein", "PROTEIN"),
                      ("dna", "DNA")):
        val = rec.get(key)
        if isinstance(val, str):
            checks.append((kind, val))
        elif isinstance(val, (list, tuple)):
            checks += [(kind, v) for v in val if isinstance(v, str)]
    text = rec.get("text")
    if isinstance(text, str) and "<" in text:
        checks += [(m.group(1), m.group(2)) for m in _TAGGED.finditer(text)]
    errors = []
    for kind, val in checks:
        check = {"SMILES": smiles_valid, "REACTION": reaction_valid, "PROTEIN": protein_valid, "DNA": dna_valid}
        ok = check.get(kind, sequence_valid)(val)
        if not ok:
            errors.append(f"invalid {kind}: {val[:60]!r}")
    return ValidityResult(not errors, len(checks), errors)
