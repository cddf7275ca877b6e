"""Split text into base-BPE prose and domain spans (SMILES, IUPAC, protein, DNA).

Two ways into a domain span, as in Intern-S1:

* explicit tags: `<SMILES>..</SMILES>`, `<SELFIES>..</SELFIES>` (SMILES vocabulary),
  `<IUPAC>..</IUPAC>`, `<FASTA>..</FASTA>` (protein), and our `<DNA>..</DNA>`.
  Tags are content markup, not control tokens: they are honoured in user text and
  get their own ids. Inside a span only the matching closing tag ends it; anything
  else (other tags included) is content. An unclosed span runs to the end of the
  text; a closing tag with no open span is plain text. Tags never nest.
* auto-detection on the remaining prose, with no tag ids (decode(encode(x)) == x):
  - SMILES / reaction SMILES: a run of >= 10 SMILES units (bracket atoms, organic
    subset atoms, bonds, ring closures, branches, `>` for reactions) that is not
    glued to a letter or digit, has >= 5 letters, and that RDKit parses (every part
    of a reaction). Results are cached. Bare `H` is not a SMILES unit, so condensed
    formulas (CH3CH2OH, H2SO4) never start a run. Runs over MAX_SMILES_CHECK characters
    are not checked (RDKit is super-linear on them) and stay prose.
  - DNA/RNA: >= 20 letters of A C G T U N (one case), at least 2 distinct bases.
  - protein: >= 20 letters of the 20 amino acids + X (optional stop `*`), >= 6
    distinct. Intern-S1 sends any 27+ capitals (and DNA) to its protein model;
    English words almost always contain O, U, J, B or Z, which we exclude.
  Runs must stand alone (no adjacent letter, digit or `_`), which keeps
  identifiers, hashes and all-caps words in prose; nothing inside a URL or an e-mail
  address is detected.
* `<MOLFORMULA>..</MOLFORMULA>` protects its content from detection; the tags
  themselves stay ordinary text (as in Intern-S1, they have no ids).

The result is a list of `Span(start, end, domain, tag)` covering the text exactly:
domain None is base-BPE prose; tag is True for an explicit tag token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import regex

# domain tag -> domain vocabulary
TAG_DOMAINS = {"SMILES": "smiles", "SELFIES": "smiles", "IUPAC": "iupac", "FASTA": "protein", "DNA": "dna"}
# The hot-path patterns use the stdlib `re` (2-3x faster than `regex` on these simple
# classes); the URL pattern needs possessive quantifiers, which `re` lacks before 3.11.
_TAG_RE = re.compile(r"<(/?)(SMILES|SELFIES|IUPAC|FASTA|DNA|MOLFORMULA)>")

# One SMILES unit: bracket atom, Cl/Br, organic subset, aromatic atoms, ring bonds
# (digits, %nn), bonds and branches, dot (mixtures/salts) and > (reactions).
_UNIT = r"(?:\[[^\[\]\s]{1,20}\]|Cl|Br|[BCNOPSFI]|[bcnops]|%\d\d|\d|[()=#\-+@/\\.:*$~>])"
_SMILES_RE = re.compile(rf"(?<![A-Za-z0-9_]){_UNIT}{{10,}}(?![A-Za-z0-9_])")
_SEQ_RE = re.compile(r"(?<![A-Za-z0-9_])(?:[A-Z]{20,}\*?|[acgtun]{20,})(?![A-Za-z0-9_])")
# URLs and e-mail addresses are never molecules, whatever their query strings contain
_URL_RE = regex.compile(
    r"(?<![a-z0-9+.-])(?:[a-z][a-z0-9+.-]*+://|www\.)[^\s<>\"']++|(?<![\w.+-])[\w.+-]++@[\w-]++\.[\w.-]++", regex.I
)  # lookbehinds + possessive runs: linear time on long SMILES full of '@'
_AMINO = frozenset("ACDEFGHIKLMNPQRSTVWYX*")
_BASES = frozenset("ACGTUN")
_MIN_LETTERS = 5


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    domain: str | None  # None: base BPE
    tag: bool = False  # an explicit domain tag (has its own id)


# RDKit's parser is super-linear on long chains (a 96k-character `[C@@H]` run takes ~11 s),
# so runs longer than this are never handed to it: they stay prose, which keeps tokenization
# linear in the input length. Real molecules in text are far shorter; longer ones can be
# wrapped in <SMILES> tags, which have no length limit.
MAX_SMILES_CHECK = 2048

try:  # optional: without RDKit nothing is auto-detected as SMILES (explicit tags still work)
    from rdkit import Chem as _Chem
    from rdkit import RDLogger as _RDLogger

    _RDLogger.DisableLog("rdApp.*")
except ImportError:  # pragma: no cover - RDKit is a core dependency of the package
    _Chem = None


def rdkit_available() -> bool:
    return _Chem is not None


@lru_cache(maxsize=1 << 16)
def rdkit_parses(smiles: str) -> bool:
    return _Chem is not None and _Chem.MolFromSmiles(smiles) is not None


@lru_cache(maxsize=1 << 16)
def is_smiles(s: str) -> bool:
    """A plausible molecule or reaction: enough letters, not all lowercase words, RDKit parses it."""
    if len(s) > MAX_SMILES_CHECK or sum(ch.isalpha() for ch in s) < _MIN_LETTERS:
        return False
    if s.islower() and not any(ch.isdigit() for ch in s):
        return False  # a lowercase word made of aromatic letters
    if ">" in s:
        parts = s.split(">")
        if len(parts) != 3 or not parts[0] or not parts[2]:
            return False
        return all(rdkit_parses(p) for p in parts if p)
    return rdkit_parses(s)


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    """Drop sentence punctuation around a SMILES run: trailing `.:=-`, leading `.:=>`, and
    unbalanced outer parentheses. The parenthesis counts are kept up to date while trimming
    (one count per run, one step per dropped character: linear in the run's length)."""
    while b > a and text[b - 1] in ".:=-":
        b -= 1
    while a < b and text[a] in ".:=>":
        a += 1
    n_open, n_close = text.count("(", a, b), text.count(")", a, b)
    while b > a and text[b - 1] == ")" and n_open < n_close:
        b, n_close = b - 1, n_close - 1
    while a < b and text[a] == "(" and n_open > n_close:
        a, n_open = a + 1, n_open - 1
    return a, b


def _classify_seq(s: str) -> str | None:
    letters = s.rstrip("*")
    kinds = set(letters.upper())
    if kinds <= _BASES and len(kinds & set("ACGTU")) >= 2 and not s.endswith("*"):
        return "dna"
    if s[0].isupper() and kinds <= _AMINO and len(kinds) >= 6:
        return "protein"
    return None


def detect(text: str, start: int, end: int, domains: frozenset[str]) -> list[Span]:
    """Auto-detected domain spans in text[start:end], sorted and non-overlapping."""
    found: list[Span] = []
    if "protein" in domains or "dna" in domains:
        for m in _SEQ_RE.finditer(text, start, end):
            d = _classify_seq(m.group())
            if d in domains:
                found.append(Span(m.start(), m.end(), d))
    if "smiles" in domains:
        for m in _SMILES_RE.finditer(text, start, end):
            a, b = _trim(text, m.start(), m.end())
            if b - a >= 10 and not is_smiles(text[a:b]) and text[a] == "(" and text[b - 1] == ")":
                a, b = a + 1, b - 1  # a molecule in parentheses: "(CN1C=NC2=C1...C)"
            if b - a >= 10 and is_smiles(text[a:b]):
                found.append(Span(a, b, "smiles"))
    if found and ("://" in text or "www." in text or "@" in text):
        urls = [m.span() for m in _URL_RE.finditer(text, start, end)]
        found = [s for s in found if not any(a < s.end and s.start < b for a, b in urls)]
    if len(found) > 1:
        found.sort(key=lambda s: s.start)
        kept = [found[0]]
        for s in found[1:]:
            if s.start >= kept[-1].end:
                kept.append(s)
        found = kept
    return found


def segment(text: str, tags: frozenset[str], auto: frozenset[str]) -> list[Span]:
    """Cover `text` with spans. `tags`: tag names that have ids (e.g. {"SMILES", "DNA"});
    `auto`: domains to auto-detect. A tag without an id is plain text."""
    spans: list[Span] = []
    pos = 0  # start of pending prose
    open_tag: str | None = None
    protect_start = -1

    def prose(a: int, b: int, scan: bool):
        if a >= b:
            return
        if scan and auto:
            for s in detect(text, a, b, auto):
                if s.start > a:
                    spans.append(Span(a, s.start, None))
                spans.append(s)
                a = s.end
        if a < b:
            spans.append(Span(a, b, None))

    if "<" in text:
        for m in _TAG_RE.finditer(text):
            closing, name = m.group(1) == "/", m.group(2)
            if open_tag is not None:  # inside a domain span: only its closing tag counts
                if closing and name == open_tag:
                    if m.start() > pos:
                        spans.append(Span(pos, m.start(), TAG_DOMAINS[name]))
                    spans.append(Span(m.start(), m.end(), TAG_DOMAINS[name], tag=True))
                    pos, open_tag = m.end(), None
                continue
            if name == "MOLFORMULA":
                if not closing and protect_start < 0:
                    prose(pos, m.end(), scan=True)  # prose, then the (plain-text) tag
                    pos = protect_start = m.end()
                elif closing and protect_start >= 0:
                    prose(pos, m.end(), scan=False)  # protected content + closing tag
                    pos, protect_start = m.end(), -1
                continue
            if protect_start >= 0 or closing or name not in tags:
                continue  # protected, stray closing tag, or tag without an id: plain text
            prose(pos, m.start(), scan=True)
            spans.append(Span(m.start(), m.end(), TAG_DOMAINS[name], tag=True))
            pos, open_tag = m.end(), name
    if open_tag is not None:
        if pos < len(text):
            spans.append(Span(pos, len(text), TAG_DOMAINS[open_tag]))
    else:
        prose(pos, len(text), scan=protect_start < 0)
    return _merge_prose(spans)


def _merge_prose(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for s in spans:
        if out and s.domain is None and out[-1].domain is None:
            out[-1] = Span(out[-1].start, s.end, None)
        else:
            out.append(s)
    return out
