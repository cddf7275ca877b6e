"""Intern-S1's auto-detection (step 3 of interns1.py): bare SMILES and FASTA runs in text
outside explicit tags get zero-width wrapper marks, as transformers' InternS1Tokenizer adds them.

- SMILES: the first group of `(?![:.=])(?>unit){10,}(?<![:.=])` (see `_smiles_pattern`); at
  least 5 ASCII letters; RDKit parses it (without RDKit, `rules_ok`, the rule-based check
  transformers uses); no ASCII letter right before or after it.
- FASTA: any run of 27+ ASCII capitals, no other check.

A bracket atom spans at most MAX_BRACKET characters and a candidate over
`detect.MAX_SMILES_CHECK` characters is not a molecule: both keep detection linear in the
input length.

Only relative imports: hf.py copies this module into exported tokenizer directories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import regex

from .detect import MAX_SMILES_CHECK, rdkit_available, rdkit_parses

MAX_BRACKET = 256

# every element symbol of the periodic table: two-letter ones are tried first
_TWO_LETTER = (
    "He Li Be Ne Na Mg Al Si Cl Ar Ca Sc Ti Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Zr Nb Mo Tc "
    "Ru Rh Pd Ag Cd In Sn Sb Te Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta Re Os Ir "
    "Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds "
    "Rg Cn Nh Fl Mc Lv Ts Og"
).split()
_ONE_LETTER = list("BCFHIKNOPSUVWY") + list("bcnops")


def _smiles_pattern() -> regex.Pattern:
    symbols = sorted(_TWO_LETTER + _ONE_LETTER, key=lambda s: (-len(s), s))
    unit = rf"(?:\[[^\]]{{1,{MAX_BRACKET}}}\]|{'|'.join(symbols)}|[()\.=\-#@\d$%*:+/\\])"
    # atomic units, at least 10, neither starting nor ending with : . =
    return regex.compile(rf"(?![:.=])(?>{unit}){{10,}}(?<![:.=])")


SMILES_RE = _smiles_pattern()
FASTA_RE = regex.compile(r"[A-Z]{27,}")


def _ascii_letters(s: str) -> int:
    return sum(1 for ch in s if ch.isascii() and ch.isalpha())


def _is_ascii_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def smiles_ok(s: str) -> bool:
    """Step 3's legitimacy test of a SMILES candidate (RDKit, else the rule checker)."""
    if len(s) > MAX_SMILES_CHECK or _ascii_letters(s) < 5:
        return False
    if not rdkit_available():
        return rules_ok(s)
    return rdkit_parses(s)


# The rule-based check transformers uses without RDKit (its check_rings_and_brackets).
_BONDS = frozenset("-=#:/\\.$")
_ORGANIC = frozenset(["B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I"])
_AROMATIC = frozenset("bnosp") | {"c"}
_OTHER_ALLOWED = _BONDS | frozenset("[]();")
_ALLOWED = _ORGANIC | _AROMATIC | _OTHER_ALLOWED
_ELEMENTS = frozenset(_TWO_LETTER) | frozenset("BCFHIKNOPSUVWY")
_BRACKET_LETTERS = regex.compile(r"(?:[A-GI-Z]|[a-z]){3,}")
_BRACKET_DIGITS = regex.compile(r"\d{4,}")


def _toggle(rings: dict, key: str) -> None:
    rings[key] = "closed" if rings.get(key) == "unclosed" else "unclosed"


@dataclass
class _Scan:
    """What `rules_ok` counts while it walks a candidate."""

    rings: dict[str, str] = field(default_factory=dict)
    sq_open: int = 0
    sq_close: int = 0
    par_open: int = 0
    par_close: int = 0
    digits: int = 0
    all_lower: bool = True


def rules_ok(s: str) -> bool:
    """Balanced brackets and rings, valid characters outside brackets, plausible bracket atoms."""
    st = _Scan()
    pos = 0
    while pos < len(s):
        step = _step(s, pos, st)
        if step is None:
            return False
        pos += step or 1
    if st.sq_open != st.sq_close or "unclosed" in st.rings.values():
        return False
    if st.all_lower and st.digits < 2:
        return False
    for inside in regex.findall(r"\[([^\[\]]*)\]", s):
        if "(" in inside or ")" in inside or not inside:
            return False
        if inside[0] in _ELEMENTS or inside[0] in _AROMATIC or inside[:2] in _ELEMENTS:
            return True
    return True


def _step(s: str, pos: int, st: _Scan) -> int | None:
    """Check the character at `pos` and count it: the characters it takes (0: one), or None
    if the candidate fails."""
    n, c, step = len(s), s[pos], 0
    if "A" <= c <= "Z":
        st.all_lower = False
    if (pos == n - 1 or pos == 0) and c in _BONDS:
        return None
    if pos > 0 and s[pos - 1] in _BONDS and c in _BONDS:
        return None
    if c == "[":
        step = 1
        st.sq_open += 1
        if st.sq_open > st.sq_close + 1 or pos == n - 1 or "]" not in s[pos + 1 :]:
            return None
        inside = s[pos + 1 : s.find("]")]  # up to the first "]" of the whole candidate
        if _BRACKET_LETTERS.search(inside) or _BRACKET_DIGITS.search(inside):
            return None
        if len(regex.findall(r"\d+", inside)) > 2:
            return None
    if c == "]":
        step = 1
        st.sq_close += 1
        if st.sq_close > st.sq_open:
            return None
    if c == "(":
        step = 1
        st.par_open += 1
    if c == ")":
        step = 1
        st.par_close += 1
        if st.par_close > st.par_open:
            return None
    if st.sq_open == st.sq_close:
        return _step_outside_brackets(s, pos, st, step)
    return step


def _step_outside_brackets(s: str, pos: int, st: _Scan, step: int) -> int | None:
    """Ring-closure digits (`1`, `%12`) and the allowed characters outside bracket atoms."""
    n, c = len(s), s[pos]
    if c.isdigit():
        st.digits += 1
        step = 1
        if pos == 0 or (pos == 1 and s[0] != "%") or (pos > 1 and s[pos - 1] != "%" and s[pos - 2] != "%"):
            _toggle(st.rings, c)
    if c == "%":
        if pos >= n - 2 or not s[pos + 1].isdigit() or not s[pos + 2].isdigit():
            return None
        step = 3
        st.digits += 1
        _toggle(st.rings, s[pos + 1 : pos + 3])
    if step == 0:
        if pos < n - 1 and s[pos : pos + 2] in _ALLOWED:
            step = 2
        elif c in _ALLOWED:
            step = 1
        else:
            return None
    return step


def auto_split(text: str, start: int, end: int) -> list[tuple[str, int, int]]:
    """Step 3 on text[start:end]: [("text"|"mark", a, b)] with marks the wrappers (zero-width
    items whose string is the wrapper). SMILES first, then FASTA over everything."""
    out: list[tuple[str, int, int] | tuple[str, str, int]] = []
    pos = start
    for m in SMILES_RE.finditer(text, start, end):
        a, b = m.span()
        if not smiles_ok(m.group()):
            continue
        if (a > start and _is_ascii_letter(text[a - 1])) or (b < end and _is_ascii_letter(text[b])):
            continue  # glued to a word of the same segment
        if a > pos:
            out.append(("text", pos, a))
        out += [("mark", "<SMILES_AUTO_DETECT>", a), ("text", a, b), ("mark", "</SMILES_AUTO_DETECT>", b)]
        pos = b
    if pos < end:
        out.append(("text", pos, end))
    result = []
    for item in out:  # FASTA over the SMILES pass's output, candidates included
        if item[0] == "mark":
            result.append(item)
            continue
        _, a0, b0 = item
        p = a0
        for m in FASTA_RE.finditer(text, a0, b0):
            a, b = m.span()
            if a > p:
                result.append(("text", p, a))
            result += [("mark", "<FASTA_AUTO_DETECT>", a), ("text", a, b), ("mark", "</FASTA_AUTO_DETECT>", b)]
            p = b
        if p < b0:
            result.append(("text", p, b0))
    return result
