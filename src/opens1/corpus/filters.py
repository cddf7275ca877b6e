"""Document quality heuristics (Gopher / C4 style, made science-aware) and `opens1 data filter`.

Intern-S1 lifts the scientific share of its web pool from ~2% to ~50% with cheap rules first and
classifiers second (Intern-S1 report, Fig. 9). This module is the cheap-rules half:

- `quality_metrics(text)` measures one document: word count, mean word length, symbol/word ratio,
  bullet and ellipsis line fractions, stop-word count, duplicate line/paragraph fractions, top n-gram
  and duplicated n-gram character fractions (Rae et al. 2021, "Gopher", App. A), and a garble score
  (replacement characters, mojibake, control/private-use characters, over-long tokens).
- `quality_check(metrics, cfg)` turns metrics into a list of failed rule names (empty = keep).
- `clean_lines(text)` drops C4-style boilerplate lines (cookie banners, "enable javascript", ...).

Design choices:
- Science-aware, because Gopher's and C4's rules were tuned on prose and drop exactly the
  formula-dense text we want (measured in bench/corpus.py: before these changes, more than half of
  held-out maths problems failed the alpha-word and repetition rules):
  * LaTeX math ($...$ with pandoc's delimiter rule, $$...$$, \\[...\\], equation environments)
    and <SMILES>/<FASTA> spans are cut out before the word-level rules; C4's "no curly braces"
    rule is not used;
  * "alpha words" counts words with a letter *or digit* and ignores bare operators (=, +, ->);
  * the n-gram repetition rules apply from 100 words on (one repeated 5-gram is 17% of 30 words);
  * over-long tokens count as garble only when made of letters (run-together extraction
    damage), not when they are formulas or code (GSM8K's <<2*3=6>>6, Asymptote paths).
- Each rule is a named threshold in a dataclass, so the filter output records *which* rules passed
  (a provenance column), and a corpus can be re-cut later without re-measuring.
- Pure Python + `regex`: this is the per-document hot path of a CPU pipeline, so it avoids any
  tokenizer and makes one pass per statistic over pre-split words and lines.

CLI (`opens1 data filter`, src/opens1/cli/data.py): reads JSONL/Parquet documents, applies the quality rules and, with
`--classifier`, the science classifier, then writes kept documents as JSONL with their scores:

    opens1 data filter docs.jsonl -o kept.jsonl
    opens1 data filter docs.jsonl -o kept.jsonl --classifier default --min-science 0.5
    opens1 data filter docs.jsonl -o kept.jsonl --min-words 20 --rejected rejected.jsonl
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import regex as re


# Gopher's stop-word rule: real prose uses at least two of these.
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Math and domain-format spans, removed before word statistics (see module docstring). Inline $...$
# follows pandoc's rule (no space inside the delimiters, no digit after the closing one) so money
# ("costs $400 ... and $2") is not mistaken for a formula.
_MATH = re.compile(
    r"\$\$.*?\$\$|\$(?=\S)[^$\n]{1,400}?(?<=\S)\$(?!\d)|\\\[.*?\\\]|\\\(.*?\\\)"
    r"|\\begin\{(equation|align|eqnarray|gather|multline)\*?\}.*?\\end\{\1\*?\}"
    r"|<(SMILES|FASTA|SELFIES|IUPAC)>.*?</\2>",
    re.S,
)
_WORD = re.compile(r"\S+")
_ALNUM = re.compile(r"[\p{L}\p{N}]")
_LETTERS = re.compile(r"\p{L}")
_OPERATOR = re.compile(r"[=+\-*/<>^|~\u00b1\u00d7\u00f7\u2190-\u21ff\u2200-\u22ff]+")
_SYMBOLS = ("#", "...", "\u2026")
_BULLETS = ("-", "*", "\u2022", "\u2023", "\u25e6", "\u2043", "+")
# Mojibake: UTF-8 read as Latin-1/CP1252 leaves these digraphs behind.
_MOJIBAKE = re.compile(r"Ã[\x80-\xbf¡-¿]|â€[\x80-\xbf™œ\"'”“]|Â[\xa0-\xbf]")
# C4's boilerplate markers, matched case-insensitively per line.
_BOILERPLATE = re.compile(
    r"javascript|lorem ipsum|cookie (policy|settings)|use cookies|privacy policy|terms of (use|service)"
    r"|all rights reserved|click here|sign up for our newsletter",
    re.I,
)


@dataclass
class QualityConfig:
    """Thresholds; defaults follow Gopher (App. A, Table A1) except where noted."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_len: float = 3.0
    max_mean_word_len: float = 10.0
    max_symbol_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8  # words with a letter or digit, math removed (science-aware)
    min_stop_words: int = 2
    max_dup_line_frac: float = 0.3
    max_dup_para_frac: float = 0.3
    max_dup_line_chars: float = 0.2
    max_dup_para_chars: float = 0.2
    # top n-gram char fraction for n = 2, 3, 4 and duplicated n-gram fraction for n = 5..10
    max_top_ngram: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram: dict[int, float] = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    max_garble: float = 0.01  # OpenS1's own: bad-char fraction; clean text is ~0
    # Repetition statistics of a 30-word text are noise (one repeated 5-gram is 17% of it); the
    # n-gram rules apply from this length on. Gopher never sees such texts (its minimum is 50 words).
    min_words_ngram_rules: int = 100


def _words_and_lines(text: str) -> tuple[list[str], list[str], list[str]]:
    prose = _MATH.sub(" ", text)
    words = _WORD.findall(prose)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return words, lines, paras


def _dup_fracs(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of their characters)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_n = dup_chars = 0
    for it in items:
        if it in seen:
            dup_n += 1
            dup_chars += len(it)
        seen.add(it)
    total = sum(len(it) for it in items)
    return dup_n / len(items), dup_chars / max(total, 1)


def _top_ngram_frac(words: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram over all word characters."""
    if len(words) < n:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return count * sum(len(w) for w in gram) / max(sum(len(w) for w in words), 1)


def _dup_ngram_frac(words: list[str], n: int) -> float:
    """Characters of words inside any n-gram seen more than once (each word counted once)."""
    if len(words) < n:
        return 0.0
    first: dict[tuple[str, ...], int] = {}
    covered = bytearray(len(words))
    for i in range(len(words) - n + 1):
        g = tuple(words[i : i + n])
        j = first.setdefault(g, i)
        if j != i:  # a repeat: mark both occurrences
            covered[i : i + n] = b"\x01" * n
            covered[j : j + n] = b"\x01" * n
    dup = sum(len(w) for w, c in zip(words, covered) if c)
    return dup / max(sum(len(w) for w in words), 1)


def garble_score(text: str) -> float:
    """Fraction of characters that signal broken extraction: U+FFFD, mojibake digraphs, control
    or private-use characters, and characters of over-long (>40 char) run-together letter tokens."""
    if not text:
        return 1.0
    bad = text.count("\ufffd") + 2 * len(_MOJIBAKE.findall(text))
    for ch in text:
        if ch in "\n\t\r":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Co", "Cs", "Cn"):
            bad += 1
    for tok in _WORD.findall(_MATH.sub(" ", text)):
        # Run-together words from broken extraction are long and nearly all letters; long tokens
        # with digits and operators are formulas or code (GSM8K's <<2*3=6>>, Asymptote) and stay.
        if len(tok) > 40 and not tok.startswith(("http", "www.", "\\")) \
                and len(_LETTERS.findall(tok)) >= 0.8 * len(tok):
            bad += len(tok)
    return bad / len(text)


def quality_metrics(text: str) -> dict[str, float]:
    """All per-document statistics used by `quality_check`, as a flat dict of floats."""
    words, lines, paras = _words_and_lines(text)
    n = len(words)
    lower = [w.lower().strip(".,;:!?\"'()[]") for w in words]
    m: dict[str, float] = {
        "n_words": float(n),
        "mean_word_len": sum(len(w) for w in words) / n if n else 0.0,
        "symbol_ratio": sum(text.count(s) for s in _SYMBOLS) / max(n, 1),
        "bullet_lines": sum(ln.startswith(_BULLETS) for ln in lines) / max(len(lines), 1),
        "ellipsis_lines": sum(ln.endswith(("...", "\u2026")) for ln in lines) / max(len(lines), 1),
        # Gopher counts words with a letter; numbers are content in science text, so a digit counts
        # too, and bare operators (=, +, ->) left over from un-delimited maths are not words.
        "alpha_words": sum(bool(_ALNUM.search(w)) for w in words) / max(sum(not _OPERATOR.fullmatch(w) for w in words), 1),
        "stop_words": float(len(STOP_WORDS.intersection(lower))),
        "garble": garble_score(text),
    }
    m["dup_line_frac"], m["dup_line_chars"] = _dup_fracs(lines)
    m["dup_para_frac"], m["dup_para_chars"] = _dup_fracs(paras)
    for k in (2, 3, 4):
        m[f"top_{k}gram"] = _top_ngram_frac(lower, k)
    for k in (5, 6, 7, 8, 9, 10):
        m[f"dup_{k}gram"] = _dup_ngram_frac(lower, k)
    return m


def quality_check(m: dict[str, float], cfg: QualityConfig | None = None) -> list[str]:
    """Names of the rules this document fails (empty list = passes every rule)."""
    c = cfg or QualityConfig()
    fails = []
    rules = {
        "min_words": m["n_words"] >= c.min_words,
        "max_words": m["n_words"] <= c.max_words,
        "word_len": c.min_mean_word_len <= m["mean_word_len"] <= c.max_mean_word_len,
        "symbol_ratio": m["symbol_ratio"] <= c.max_symbol_ratio,
        "bullet_lines": m["bullet_lines"] <= c.max_bullet_lines,
        "ellipsis_lines": m["ellipsis_lines"] <= c.max_ellipsis_lines,
        "alpha_words": m["alpha_words"] >= c.min_alpha_words,
        "stop_words": m["stop_words"] >= c.min_stop_words,
        "dup_lines": m["dup_line_frac"] <= c.max_dup_line_frac and m["dup_line_chars"] <= c.max_dup_line_chars,
        "dup_paras": m["dup_para_frac"] <= c.max_dup_para_frac and m["dup_para_chars"] <= c.max_dup_para_chars,
        "top_ngram": m["n_words"] < c.min_words_ngram_rules
        or all(m[f"top_{k}gram"] <= v for k, v in c.max_top_ngram.items()),
        "dup_ngram": m["n_words"] < c.min_words_ngram_rules
        or all(m[f"dup_{k}gram"] <= v for k, v in c.max_dup_ngram.items()),
        "garble": m["garble"] <= c.max_garble,
    }
    for name, ok in rules.items():
        if not ok:
            fails.append(name)
    return fails


RULE_NAMES = ("min_words", "max_words", "word_len", "symbol_ratio", "bullet_lines", "ellipsis_lines",
              "alpha_words", "stop_words", "dup_lines", "dup_paras", "top_ngram", "dup_ngram", "garble")


def clean_lines(text: str) -> str:
    """C4-style line cleanup: drop boilerplate lines (cookie banners, 'enable JavaScript', ...)."""
    kept = [ln for ln in text.split("\n") if not _BOILERPLATE.search(ln)]
    return "\n".join(kept).strip()


def filter_documents(docs: Iterable[dict], cfg: QualityConfig, *, clean: bool = True, classifier=None,
                     min_science: float = 0.5) -> tuple[list[dict], list[dict]]:
    """(kept, rejected) documents, each with its text cleaned (`clean_lines`, unless `clean`
    is False) and `quality_fails`; with a `classifier` (classify.ScienceClassifier), documents
    that pass the rules also get `science_score` and `domain`, and fail "science" below
    `min_science`."""
    kept, rejected = [], []
    for doc in docs:
        text = clean_lines(doc["text"]) if clean else doc["text"]
        fails = quality_check(quality_metrics(text), cfg)
        out = dict(doc, text=text, quality_fails=fails)
        if classifier is not None and not fails:
            pred = classifier.predict([text])[0]
            out.update(science_score=pred.science, domain=pred.domain)
            if pred.science < min_science:
                out["quality_fails"] = fails = fails + ["science"]
        (rejected if fails else kept).append(out)
    return kept, rejected
