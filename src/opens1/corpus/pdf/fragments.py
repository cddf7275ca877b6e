"""The page model of the cheap PDF path: line fragments, cut-out items (tables, figures),
a page's layout and the document's body style, plus glyph-text cleanup (compatibility
forms, (cid:N) codes, word joining). Font-name and Unicode cues live here because every
later step (tables, reading order, routing, rendering) reads them."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

# Font-name cues. Embedded fonts carry a 6-letter subset prefix ("ABCDEF+CMBX12").
BOLD = re.compile(r"bold|black|heavy|semibold|demi|cmbx|sfbx|\bbx|[-,]b\b|medi", re.I)
MONO = re.compile(r"mono|courier|consol|cmtt|sftt|typewriter|menlo|inconsolata|code", re.I)
MATHFONT = re.compile(r"cmmi|cmsy|cmex|msam|msbm|math|symbol|stix|rsfs|eufm|mtmi|mtsy|esint|wasy", re.I)
# Unicode blocks that mark mathematics: Greek, arrows, operators, letterlike symbols.
MATHCHAR = re.compile(r"[\u0370-\u03ff\u2190-\u21ff\u2200-\u22ff\u2100-\u214f\u27c0-\u27ef\u2980-\u2aff"
                       r"\u00b1\u00d7\u00f7\u2032-\u2037\u221a\u222b\U0001d400-\U0001d7ff]")
NUMBERED = re.compile(r"^(\d+(\.\d+)*\.?|[IVX]+\.|[A-Z]\.(\d+\.?)*)\s+\S")
CAPTION = re.compile(r"^(fig\.?|figure|table|tab\.|listing|algorithm)\s*\d", re.I)
PAGENUM = re.compile(r"^[\s\-–—]*((page|p\.)\s*)?(\d{1,4}|[ivxlc]{1,6})(\s*(of|/)\s*\d{1,4})?[\s\-–—]*$", re.I)
FOOTNOTE = re.compile(r"^([0-9]{1,2}|[*†‡§¶∗])\s?\S")
CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")

# Unicode math -> LaTeX for display formulas (the common subset; others pass through).


@dataclass
class Frag:
    """A line fragment: words on one baseline, not crossing a column gutter."""

    x0: float
    x1: float
    top: float
    bottom: float
    words: list[dict]
    size: float = 0.0  # dominant font size (pt)
    font: str = ""  # dominant font name, subset prefix removed
    removed: str = ""  # why strip_running_lines dropped it ("" = kept)

    @property
    def text(self) -> str:
        return join_words(self.words)

    @property
    def bold(self) -> bool:
        """Every word with letters is bold (a bold run-in lead such as "Datasets. We
        use ..." does not make the line bold)."""
        ws = [w for w in self.words if re.search(r"\w", w["text"])]
        return bool(ws) and all(BOLD.search(w["fontname"]) for w in ws)

    @property
    def mono(self) -> bool:
        return all(MONO.search(w["fontname"]) for w in self.words)

    def math_fraction(self) -> float:
        """Fraction of glyphs set in a math font or that are math symbols."""
        n = m = 0
        for w in self.words:
            mf = bool(MATHFONT.search(w["fontname"]))
            for ch in w["text"]:
                if ch.isdigit() or ch in ".,()[]":  # neutral: as common in prose as in maths
                    continue
                n += 1
                m += mf or bool(MATHCHAR.match(ch)) or ch in "=+<>^_|"
        return m / max(n, 1)


@dataclass
class Item:
    """A positioned non-prose object in reading order: a table or a figure."""

    kind: str  # "table" | "figure"
    bbox: tuple[float, float, float, float]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class PageLayout:
    number: int  # 1-based
    width: float
    height: float
    frags: list[Frag]  # in reading order
    items: list[Item]
    n_chars: int = 0
    columns: int = 1
    order: list = field(default_factory=list)  # frags and items interleaved, reading order


@dataclass
class DocStyle:
    """Document-level font statistics used to tell headings from body text."""

    body_size: float = 10.0
    body_font: str = ""

    @classmethod
    def from_layouts(cls, layouts: list[PageLayout]) -> "DocStyle":
        sizes: Counter = Counter()
        fonts: Counter = Counter()
        for lay in layouts:
            for f in lay.frags:
                n = sum(len(w["text"]) for w in f.words)
                sizes[round(f.size, 1)] += n
                fonts[f.font] += n
        if not sizes:
            return cls()
        return cls(body_size=sizes.most_common(1)[0][0], body_font=fonts.most_common(1)[0][0])


def font_name(name: str) -> str:
    return name.split("+", 1)[-1]


def _compat_table() -> dict[int, str]:
    """Code points to fold with NFKC: Kangxi/CJK radicals and compatibility ideographs
    (PDFs from CJK fonts often map 一 to the radical ⼀), Latin ligatures (ﬁ -> fi);
    control and private-use code points (glyph pieces of big brackets) are deleted.
    Everything else is left alone: NFKC on all text would turn x² into x2."""
    table: dict[int, str] = {}
    for lo, hi in ((0x2E80, 0x2FDF), (0xF900, 0xFAFF), (0xFB00, 0xFB06)):
        for cp in range(lo, hi + 1):
            folded = unicodedata.normalize("NFKC", chr(cp))
            if folded != chr(cp):
                table[cp] = folded
    for cp in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0)) + list(range(0xE000, 0xF900)):
        if chr(cp) not in "\n\t":
            table[cp] = ""
    return table


_COMPAT = _compat_table()


_CID = re.compile(r"\(cid:\d+\)")


def clean_text(text: str) -> str:
    """Fold compatibility code points and drop glyphs that carry no text (pdfminer's
    "(cid:N)" for glyphs without a Unicode mapping, control and private-use codes)."""
    return _CID.sub("", text).translate(_COMPAT)


def join_words(words: list[dict]) -> str:
    """Join words left to right: a space only where the glyph gap is a real word gap, and
    never between two CJK characters (Chinese/Japanese have no inter-word spaces)."""
    out = ""
    prev = None
    for w in words:
        if prev is not None:
            gap = w["x0"] - prev["x1"]
            cjk = CJK.match(prev["text"][-1:]) and CJK.match(w["text"][:1])
            # same font: extract_words split there because of a >1 pt gap, a word space;
            # font or size change (small caps, a bold letter): split by the attribute, so
            # only a wider gap is a space ("I" + "NTRODUCTION" is one word)
            same = prev["fontname"] == w["fontname"] and abs(prev["size"] - w["size"]) < 0.1
            if gap > (0.05 if same else 0.15) * max(w["size"], 1.0) and not cjk:
                out += " "
        out += w["text"]
        prev = w
    return clean_text(out)


def inside(w: dict, bbox, pad: float = 1.0) -> bool:
    cx, cy = (w["x0"] + w["x1"]) / 2, (w["top"] + w["bottom"]) / 2
    return bbox[0] - pad <= cx <= bbox[2] + pad and bbox[1] - pad <= cy <= bbox[3] + pad


def group_rows(words: list[dict]) -> list[list[dict]]:
    """Group words into rows by vertical overlap with the row's band (superscripts and
    subscripts overlap their line by more than half their own height)."""
    rows: list[list[dict]] = []
    bands: list[list[float]] = []
    for w in sorted(words, key=lambda w: (w["top"], w["x0"])):
        h = w["bottom"] - w["top"]
        for band, row in zip(bands[-3:], rows[-3:]):
            ov = min(band[1], w["bottom"]) - max(band[0], w["top"])
            if ov > 0.5 * min(h, band[1] - band[0]):
                row.append(w)
                break
        else:
            rows.append([w])
            bands.append([w["top"], w["bottom"]])
    return rows


def word_gap(a: dict, b: dict) -> float:
    return (b["x0"] - a["x1"]) / max(a["size"], b["size"], 4.0)  # in ems
