"""Page layout to Markdown: the cheap, text-layer path of `opens1 data parse-pdf`.

One page goes through three steps:

1. `extract_layout(page)`: pdfplumber words (with font size and name) become line
   fragments; tables and raster figures are cut out first so their text does not
   pollute the prose. Tables come from ruling lines (`find_tables`: pdfplumber's grid
   when there are column rules, aligned-column detection inside booktabs-style
   horizontal rules) and from aligned columns alone (`find_text_tables`: runs of rows
   with 3+ cells, columns where 75% of the rows have whitespace, a share of numeric
   cells). Fragments are ordered for reading: a vertical gutter found by x-gaps splits
   the page into two columns, and lines that span the gutter (titles, full-width
   figures) act as section breaks.
2. `strip_running_lines(layouts)`: running headers and footers are removed at document
   level (lines in the top/bottom margin that repeat across pages with digits masked,
   bare page numbers, short margin lines that carry a page number).
3. `page_markdown(layout, style)`: fragments become blocks (paragraph, heading, code,
   display formula), rendered as Markdown with tables as pipe tables and figure
   references as image links.

Design choices:
- Everything is geometry and font statistics, no model: headings are lines whose size
  is well above the document's body size, or short standalone lines in a bold/other
  font that start with a section number. This is what MinerU-class parsers do before
  their layout models, and it is about 20x cheaper than a VLM.
- Word splitting uses a tight x tolerance (1 pt): justified LaTeX text often has
  narrow inter-word gaps that pdfplumber's default (3 pt) glues together.
- Display formulas (a standalone line mostly in math fonts or math symbols) are turned
  into LaTeX from the glyphs: Unicode math to commands, smaller raised/lowered glyphs to
  ^{..}/_{..}. Inline math in prose is left as Unicode text.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

# Font-name cues. Embedded fonts carry a 6-letter subset prefix ("ABCDEF+CMBX12").
_BOLD = re.compile(r"bold|black|heavy|semibold|demi|cmbx|sfbx|\bbx|[-,]b\b|medi", re.I)
_MONO = re.compile(r"mono|courier|consol|cmtt|sftt|typewriter|menlo|inconsolata|code", re.I)
_MATHFONT = re.compile(r"cmmi|cmsy|cmex|msam|msbm|math|symbol|stix|rsfs|eufm|mtmi|mtsy|esint|wasy", re.I)
# Unicode blocks that mark mathematics: Greek, arrows, operators, letterlike symbols.
_MATHCHAR = re.compile(r"[\u0370-\u03ff\u2190-\u21ff\u2200-\u22ff\u2100-\u214f\u27c0-\u27ef\u2980-\u2aff"
                       r"\u00b1\u00d7\u00f7\u2032-\u2037\u221a\u222b\U0001d400-\U0001d7ff]")
_NUMBERED = re.compile(r"^(\d+(\.\d+)*\.?|[IVX]+\.|[A-Z]\.(\d+\.?)*)\s+\S")
_CAPTION = re.compile(r"^(fig\.?|figure|table|tab\.|listing|algorithm)\s*\d", re.I)
_PAGENUM = re.compile(r"^[\s\-–—]*((page|p\.)\s*)?(\d{1,4}|[ivxlc]{1,6})(\s*(of|/)\s*\d{1,4})?[\s\-–—]*$", re.I)
_FOOTNOTE = re.compile(r"^([0-9]{1,2}|[*†‡§¶∗])\s?\S")
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")

# Unicode math -> LaTeX for display formulas (the common subset; others pass through).
LATEX = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon", "ϵ": r"\epsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ι": r"\iota", "κ": r"\kappa", "λ": r"\lambda",
    "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma", "τ": r"\tau",
    "υ": r"\upsilon", "φ": r"\phi", "ϕ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
    "Γ": r"\Gamma", "Δ": r"\Delta", "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi", "Π": r"\Pi",
    "Σ": r"\Sigma", "Φ": r"\Phi", "Ψ": r"\Psi", "Ω": r"\Omega", "∑": r"\sum", "∏": r"\prod",
    "∫": r"\int", "∮": r"\oint", "√": r"\sqrt", "∞": r"\infty", "∂": r"\partial", "∇": r"\nabla",
    "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "≈": r"\approx", "≡": r"\equiv", "∼": r"\sim",
    "∝": r"\propto", "±": r"\pm", "∓": r"\mp", "×": r"\times", "÷": r"\div", "·": r"\cdot",
    "⋅": r"\cdot", "∗": r"\ast", "∈": r"\in", "∉": r"\notin", "⊂": r"\subset", "⊆": r"\subseteq",
    "∪": r"\cup", "∩": r"\cap", "∀": r"\forall", "∃": r"\exists", "→": r"\rightarrow",
    "←": r"\leftarrow", "⇒": r"\Rightarrow", "⇔": r"\Leftrightarrow", "↔": r"\leftrightarrow",
    "−": "-", "′": "'", "…": r"\ldots", "⋯": r"\cdots", "∥": r"\|", "⟨": r"\langle", "⟩": r"\rangle",
    "ℓ": r"\ell", "∆": r"\Delta", "Ω": r"\Omega", "µ": r"\mu", "∅": r"\emptyset", "⊗": r"\otimes",
    "⊕": r"\oplus", "∘": r"\circ",
}


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
        return bool(ws) and all(_BOLD.search(w["fontname"]) for w in ws)

    @property
    def mono(self) -> bool:
        return all(_MONO.search(w["fontname"]) for w in self.words)

    def math_fraction(self) -> float:
        """Fraction of glyphs set in a math font or that are math symbols."""
        n = m = 0
        for w in self.words:
            mf = bool(_MATHFONT.search(w["fontname"]))
            for ch in w["text"]:
                if ch.isdigit() or ch in ".,()[]":  # neutral: as common in prose as in maths
                    continue
                n += 1
                m += mf or bool(_MATHCHAR.match(ch)) or ch in "=+<>^_|"
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


def _font(name: str) -> str:
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
            cjk = _CJK.match(prev["text"][-1:]) and _CJK.match(w["text"][:1])
            # same font: extract_words split there because of a >1 pt gap, a word space;
            # font or size change (small caps, a bold letter): split by the attribute, so
            # only a wider gap is a space ("I" + "NTRODUCTION" is one word)
            same = prev["fontname"] == w["fontname"] and abs(prev["size"] - w["size"]) < 0.1
            if gap > (0.05 if same else 0.15) * max(w["size"], 1.0) and not cjk:
                out += " "
        out += w["text"]
        prev = w
    return clean_text(out)


# ---------------------------------------------------------------------------------------
# 1. geometry: words -> fragments -> reading order


def _inside(w: dict, bbox, pad: float = 1.0) -> bool:
    cx, cy = (w["x0"] + w["x1"]) / 2, (w["top"] + w["bottom"]) / 2
    return bbox[0] - pad <= cx <= bbox[2] + pad and bbox[1] - pad <= cy <= bbox[3] + pad


def find_tables(page, words: list[dict]) -> list[Item]:
    """Ruled tables. Rules that are only horizontal (booktabs, LNCS) give pdfplumber no
    cell walls at the table's outer edge, so we add explicit vertical lines at the ends of
    every long horizontal rule. A table with real vertical rules inside is read from its
    cells; one without (booktabs) only tells us where the table is, and its columns are
    found from the words' alignment (_grid), as pdfplumber would put whole columns into
    one cell."""
    hrules = [e for e in page.horizontal_edges if e["x1"] - e["x0"] > 0.2 * page.width]
    xs = sorted({round(e["x0"], 1) for e in hrules} | {round(e["x1"], 1) for e in hrules})
    settings = {"explicit_vertical_lines": xs} if xs else {}
    items = []
    try:
        tables = page.find_tables(settings)
    except Exception:  # pdfplumber can fail on odd edge sets; prose still comes through
        tables = []
    for t in tables:
        x0, top, x1, bottom = t.bbox
        # real column rules run most of the table's height; short verticals inside the
        # box are figure strokes or rules of a smaller table
        # (summed per x: ruled grids draw them as one segment per row)
        runs: Counter = Counter()
        for e in page.vertical_edges:
            if x0 + 2 < e["x0"] < x1 - 2 and e["top"] < bottom and e["bottom"] > top:
                runs[round(e["x0"])] += min(e["bottom"], bottom) - max(e["top"], top)
        inner = [x for x, length in runs.items() if length > 0.5 * (bottom - top)]
        if not inner:
            # the rules only locate the table (pdfplumber may also merge two stacked
            # tables with the caption between them): split it into runs of rows
            region = [w for w in words if _inside(w, t.bbox)]
            for run in _runs(region, page.width, min_cells=2, min_rows=2) if region else []:
                grid = _grid(run)
                if len(grid) >= 2 and len(grid[0]) >= 2 and _plausible(grid):
                    items.append(Item("table", _bbox(run), grid))
            continue
        rows = []
        for r in t.extract(x_tolerance=1):
            cells = [(c or "").strip().split("\n") for c in r]
            k = {len(c) for c in cells if c != [""]}
            if len(k) == 1 and min(k) >= 2:  # every cell holds k stacked lines: k rows
                rows += [[c[i] if c != [""] else "" for c in cells] for i in range(min(k))]
            else:  # mixed (a merged cell next to stacked values): keep one row
                rows.append([" ".join(c) for c in cells])
        rows = [[re.sub(r"\s+", " ", clean_text(c)).strip() for c in r] for r in rows]
        rows = [r for r in rows if any(r)]
        # drop columns that are empty in every row (artefacts of the explicit lines)
        keep = [j for j in range(max((len(r) for r in rows), default=0)) if any(j < len(r) and r[j] for r in rows)]
        rows = [[r[j] if j < len(r) else "" for j in keep] for r in rows]
        if len(rows) >= 2 and len(keep) >= 2 and _plausible(rows):
            items.append(Item("table", tuple(t.bbox), rows))
    return items


def _bbox(run: list) -> tuple[float, float, float, float]:
    ws = [w for row in run for c in row for w in c]
    return (min(w["x0"] for w in ws), min(w["top"] for w in ws), max(w["x1"] for w in ws),
            max(w["bottom"] for w in ws))


def _plausible(rows: list[list[str]]) -> bool:
    """Tables are dense and not 20 columns wide: text in figures (diagram labels boxed by
    rectangles) makes sparse, wide pseudo-tables that are better left as text."""
    ncol = len(rows[0])
    filled = sum(bool(c) for r in rows for c in r)
    return ncol <= 15 and filled >= 0.4 * len(rows) * ncol


def _cells_by_row(words: list[dict]) -> list[list[list[dict]]]:
    """Rows of cells: words in a row, grouped where the gap is under 1 em."""
    out = []
    for r in sorted(_rows(words), key=lambda r: min(w["top"] for w in r)):
        r.sort(key=lambda w: w["x0"])
        cells = [[r[0]]]
        for w in r[1:]:
            if _gap(cells[-1][-1], w) > 1.0:
                cells.append([])
            cells[-1].append(w)
        out.append(cells)
    return out


def _grid(run: list[list[list[dict]]]) -> list[list[str]]:
    """Rows of cells -> a table. Column walls are x-ranges at least 0.5 em wide that are
    free of words in 75% of the rows (spanning header cells may cross them); each cell
    goes whole to the column of its centre; all-empty columns are dropped."""
    ws = [w for row in run for c in row for w in c]
    x0, x1 = min(w["x0"] for w in ws), max(w["x1"] for w in ws)
    free = [0] * (int(x1 - x0) + 1)
    # walls come from the body rows: label rows and spanning headers have few cells
    most = max(len(row) for row in run)
    body = [row for row in run if len(row) >= max(2, 0.5 * most)]
    for row in body:
        busy = [False] * len(free)
        for c in row:
            for w in c:
                for x in range(int(w["x0"] - x0), min(int(w["x1"] - x0) + 1, len(free))):
                    busy[x] = True
        for x, b in enumerate(busy):
            free[x] += not b
    em = statistics.median(w["size"] for w in ws)
    walls, start = [], None
    for x, f in enumerate(free + [0]):
        if f >= 0.75 * len(body) and start is None:
            start = x
        elif f < 0.75 * len(body) and start is not None:
            if x - start >= 0.5 * em:
                walls.append(x0 + (start + x) / 2)
            start = None
    table = []
    for row in run:
        cells = [[] for _ in range(len(walls) + 1)]
        for c in row:
            # split a group only at a wall that falls into a gap between two of its words
            # (tight numeric columns); a wall through a word ("BERT-Base" spanning two
            # sub-columns) keeps the group whole, in the column of its centre
            parts, cur = [], [c[0]]
            for a, b in zip(c, c[1:]):
                if any(a["x1"] <= x <= b["x0"] for x in walls):
                    parts.append(cur)
                    cur = []
                cur.append(b)
            parts.append(cur)
            for part in parts:
                cells[sum((part[0]["x0"] + part[-1]["x1"]) / 2 > x for x in walls)].extend(part)
        table.append([join_words(c) for c in cells])
    keep = [j for j in range(len(walls) + 1) if any(r[j] for r in table)]
    return [[r[j] for j in keep] for r in table]


def find_figures(page, min_area: float = 0.01) -> list[Item]:
    """Raster images covering at least `min_area` of the page, as figure references."""
    area = page.width * page.height
    out = []
    for im in page.images:
        x0, top, x1, bottom = im["x0"], im["top"], im["x1"], im["bottom"]
        if (x1 - x0) * (bottom - top) >= min_area * area:
            out.append(Item("figure", (max(x0, 0), max(top, 0), min(x1, page.width), min(bottom, page.height))))
    return out


def _rows(words: list[dict]) -> list[list[dict]]:
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


def _split(rows: list[list[dict]], cut) -> list[Frag]:
    """Rows (words sorted by x) -> fragments, cutting between words where cut(a, b)."""
    out = []
    for row in rows:
        cur = [row[0]]
        for w in row[1:]:
            if cut(cur[-1], w):
                out.append(_frag(cur))
                cur = []
            cur.append(w)
        out.append(_frag(cur))
    return out


def _gap(a: dict, b: dict) -> float:
    return (b["x0"] - a["x1"]) / max(a["size"], b["size"], 4.0)  # in ems


def _frags(words: list[dict], width: float) -> tuple[list[Frag], float | None]:
    """Words -> fragments and the column gutter. Tentative fragments cut at every gap
    over 1 em locate the gutter; the final ones are cut only at the gutter and at very
    wide gaps (right-aligned page numbers), so wide justified spaces stay inside lines."""
    rows = [sorted(r, key=lambda w: w["x0"]) for r in _rows(words)]
    gutter = find_gutter(_split(rows, lambda a, b: _gap(a, b) > 1.0), width)

    def cut(a, b):
        at_gutter = gutter is not None and a["x1"] <= gutter + 1 and b["x0"] >= gutter - 1 and _gap(a, b) > 0.5
        return at_gutter or _gap(a, b) > 3.0

    return _split(rows, cut), gutter


def _frag(words: list[dict]) -> Frag:
    sizes: Counter = Counter()
    fonts: Counter = Counter()
    for w in words:
        sizes[round(w["size"], 1)] += len(w["text"])
        fonts[_font(w["fontname"])] += len(w["text"])
    body = [w for w in words if round(w["size"], 1) == sizes.most_common(1)[0][0]]
    return Frag(
        x0=min(w["x0"] for w in words), x1=max(w["x1"] for w in words),
        top=min(w["top"] for w in body), bottom=max(w["bottom"] for w in body),
        words=words, size=sizes.most_common(1)[0][0], font=fonts.most_common(1)[0][0],
    )


def find_gutter(frags: list[Frag], width: float) -> float | None:
    """The x of a two-column gutter, or None. A gutter is an x in the middle 40% of the
    page that few fragments cross while many fragments lie wholly on each side of it.
    Fragments wider than 55% of the page (titles, full-width figures and tables with
    their labels) do not vote: they span the gutter by design and the band logic of
    reading_order reads them in place."""
    narrow = [f for f in frags if f.x1 - f.x0 < 0.55 * width]
    if len(narrow) < 10:
        return None
    best = None
    for x in range(int(0.3 * width), int(0.7 * width), 2):
        cross = sum(f.x0 < x < f.x1 for f in narrow)
        left = sum(f.x1 <= x for f in narrow)
        right = sum(f.x0 >= x for f in narrow)
        if left >= 5 and right >= 5 and cross <= 0.2 * len(narrow):
            score = (cross, -min(left, right))
            if best is None or score < best[0]:
                best = (score, x)
    return None if best is None else float(best[1])


def reading_order(frags: list[Frag], items: list[Item], gutter: float | None) -> tuple[list, int]:
    """Order fragments and items for reading. With a gutter: walk top to bottom; anything
    that spans the gutter closes the current band, whose left column is read before its
    right column. Items (tables, figures) are placed by their top edge in their column."""
    objs: list = list(frags) + list(items)

    def box(o):
        return o.bbox if isinstance(o, Item) else (o.x0, o.top, o.x1, o.bottom)

    if gutter is None:
        return sorted(objs, key=lambda o: (box(o)[1], box(o)[0])), 1
    ordered: list = []
    band: list = []

    def flush():
        left = [o for o in band if box(o)[2] <= gutter + 2]
        right = [o for o in band if box(o)[2] > gutter + 2]
        for side in (left, right):
            ordered.extend(sorted(side, key=lambda o: (box(o)[1], box(o)[0])))
        band.clear()

    for o in sorted(objs, key=lambda o: (box(o)[1], box(o)[0])):
        x0, _, x1, _ = box(o)
        if x0 < gutter - 2 and x1 > gutter + 2:  # spans both columns
            flush()
            ordered.append(o)
        else:
            band.append(o)
    flush()
    return ordered, 2


_NUMERIC = re.compile(r"^[\s(±~<>≈\-–−+]*[\d.,]+\s*[%)×x*†‡]*$|^n/?a$|^[-–—]$", re.I)


def find_text_tables(words: list[dict], width: float, gutter: float | None = None) -> list[Item]:
    """Borderless tables (see _text_tables). On a two-column page, tables that span the
    gutter are taken first (most rows have cells on both sides); then each column is
    searched alone, so prose in the other column never joins a table's rows."""
    if gutter is None:
        return [it for it, _ in _text_tables(words, width)]
    items = []
    for it, run in _text_tables(words, width):
        both = sum(any(c[-1]["x1"] <= gutter for c in row) and any(c[0]["x0"] >= gutter for c in row) for row in run)
        if both >= 0.6 * len(run):
            items.append(it)
    rest = [w for w in words if not any(_inside(w, it.bbox, pad=0.5) for it in items)]
    for side in ([w for w in rest if w["x1"] <= gutter + 1], [w for w in rest if w["x0"] >= gutter - 1]):
        items += [it for it, _ in _text_tables(side, width)] if side else []
    return items


def _runs(words: list[dict], width: float, min_cells: int = 3, min_rows: int = 3) -> list[list]:
    """Runs of table-like rows. A row is a candidate when, after setting aside prose
    fragments (6+ words, over a quarter of the page wide), at least `min_cells` cells
    separated by 1-em gaps remain. Captions and sentence-like rows without numbers end a
    run; short label rows (a lone "DEP") are absorbed; rows entirely in another column
    are skipped. Runs with `min_rows` candidate rows are returned."""
    parsed = []  # per row: its cells, prose fragments set aside
    for cells in _cells_by_row(words):
        cells = [c for c in cells if not (len(c) >= 6 and c[-1]["x1"] - c[0]["x0"] > 0.25 * width)]
        if cells and _CAPTION.match(join_words(cells[0])):
            cells = []  # "Table 2: ..." ends a table even when its words are gapped
        texts = [join_words(c) for c in cells]
        if any(len(c) >= 5 for c in cells) and not any(_NUMERIC.match(t) for t in texts):
            cells = []  # a sentence-long cell and no number: justified prose, a table note
        parsed.append(cells)
    runs: list[list[list[list[dict]]]] = []
    cur: list = []
    for cells in parsed + [None]:
        if cells == []:  # a caption: always a break
            cells = None
        if cells is not None and len(cells) >= min_cells:
            cur.append(cells)
            continue
        if cur and cells:
            x0 = min(c[0]["x0"] for row in cur for c in row)
            x1 = max(c[-1]["x1"] for row in cur for c in row)
            inside = [c for c in cells if c[-1]["x1"] > x0 and c[0]["x0"] < x1]
            if not inside:
                continue  # another column's line: does not interrupt the table
            if sum(len(c) for c in inside) <= 3 and sum(c[-1]["x1"] - c[0]["x0"] for c in inside) < 0.3 * (x1 - x0):
                cur.append(inside)  # a short label row
                continue
        if sum(len(r) >= min_cells for r in cur) >= min_rows:
            runs.append(cur)
        cur = []
    return runs


def _text_tables(words: list[dict], width: float) -> list[tuple[Item, list]]:
    """Borderless tables from aligned columns (_runs, then _grid). A run is kept if it
    has 3+ columns and a fifth of its cells are numbers, which keeps author lists and
    other gapped prose out."""
    runs = _runs(words, width)
    items = []
    for run in runs:
        table = _grid(run)
        filled = [c for r in table for c in r if c]
        numeric = sum(bool(_NUMERIC.match(c)) for c in filled)
        if len(table[0]) >= 3 and _plausible(table) and numeric >= 0.2 * len(filled):
            items.append((Item("table", _bbox(run), table), run))
    return items


def extract_layout(page, number: int) -> PageLayout:
    """One pdfplumber page -> PageLayout (fragments and items in reading order)."""
    words = page.extract_words(x_tolerance=1.0, y_tolerance=2.0, keep_blank_chars=False,
                               use_text_flow=False, extra_attrs=["size", "fontname"], return_chars=True)
    # rotated text (arXiv side stamps, rotated axis labels) would scatter single letters
    # over the reading order; it is left out of the layout
    words = [w for w in words if w["text"].strip() and w.get("upright", True)]
    n_chars = len(page.chars)
    items = find_tables(page, words)
    words = [w for w in words if not any(_inside(w, it.bbox) for it in items)]
    if words:  # borderless tables among what the ruled ones left
        rows = [sorted(r, key=lambda w: w["x0"]) for r in _rows(words)]
        gutter = find_gutter(_split(rows, lambda a, b: _gap(a, b) > 1.0), page.width)
        text_tables = find_text_tables(words, page.width, gutter)
        words = [w for w in words if not any(_inside(w, it.bbox, pad=0.5) for it in text_tables)]
        items += text_tables
    items += find_figures(page)
    frags, gutter = _frags(words, page.width) if words else ([], None)
    ordered, cols = reading_order(frags, items, gutter)
    lay = PageLayout(number, float(page.width), float(page.height), [], [], n_chars=n_chars, columns=cols)
    # Keep one ordered stream too: rendering walks frags and items interleaved.
    lay.frags = [o for o in ordered if isinstance(o, Frag)]
    lay.items = [o for o in ordered if isinstance(o, Item)]
    lay.order = ordered
    return lay


_EQNUM = re.compile(r"^\(\d{1,3}[a-z]?\)$")


def count_display_math(lay: PageLayout) -> int:
    """Rows that look like display maths: a fragment mostly in math fonts/symbols, or an
    equation number "(n)" standing apart at the end of a row. Counted per row, so an
    equation split into several fragments counts once. A routing signal that works even
    when the maths is set in text fonts (where formula_density stays low)."""
    rows: set[int] = set()
    for f in lay.frags:
        t = f.text.strip()
        if _EQNUM.match(t) or (len(re.sub(r"\s", "", t)) >= 3 and f.math_fraction() > 0.5):
            rows.add(int(f.top // 4))
    return len(rows)


# ---------------------------------------------------------------------------------------
# 2. running headers, footers and page numbers


def _mask(text: str) -> str:
    return re.sub(r"\d+", "#", re.sub(r"\s+", " ", text.strip().lower()))


def strip_running_lines(layouts: list[PageLayout], style: DocStyle, margin: float = 0.18) -> int:
    """Mark margin lines that are page furniture; returns how many were removed.

    Candidates are the two top-most and two bottom-most rows of a page that sit in
    the top/bottom `margin` of the page. A candidate goes if it is a bare page number, if
    its digit-masked text recurs on at least two pages (and 30% of them), or if it is a
    short non-bold outermost line whose first or last fragment is a page number set
    apart, and that stands apart from the body (the running header of a single page cut
    from a paper)."""
    cands: list[tuple[PageLayout, list[Frag], list[Frag]]] = []  # (page, row, page rows)
    for lay in layouts:
        rows: list[list[Frag]] = []
        for f in sorted(lay.frags, key=lambda f: f.top):
            if rows and abs(rows[-1][0].top - f.top) < 0.5 * max(f.size, 1):
                rows[-1].append(f)
            else:
                rows.append([f])
        picked = [r for r in rows[:2] if r[0].bottom < margin * lay.height]
        picked += [r for r in rows[-2:] if r[0].top > (1 - margin) * lay.height and all(r is not p for p in picked)]
        cands += [(lay, r, rows) for r in picked]

    def text(row):
        return " ".join(f.text.strip() for f in sorted(row, key=lambda f: f.x0))

    # on how many pages each digit-masked margin text occurs
    counts = Counter(t for lay in layouts for t in {_mask(text(r)) for la, r, _ in cands if la is lay})
    pages_needed = max(2, int(0.3 * len(layouts) + 0.999))
    removed = 0
    for lay, row, rows in cands:
        t = text(row)
        # a page number set apart from the running title is its own fragment ("Title   9");
        # a footnote's marker ("1 See ...") is not, so footnotes are not taken for headers
        ends = sorted(row, key=lambda f: f.x0)
        nums = len(row) >= 2 and (_PAGENUM.match(ends[0].text) or _PAGENUM.match(ends[-1].text))
        i = next(k for k, r in enumerate(rows) if r is row)
        gaps = [rows[i + 1][0].top - row[0].bottom] if i + 1 < len(rows) else []
        gaps += [row[0].top - rows[i - 1][0].bottom] if i > 0 else []
        apart = min(gaps, default=99.0) > 0.9 * row[0].size
        why = ""
        if _PAGENUM.match(t):
            why = "page-number"
        elif len(layouts) >= 2 and counts[_mask(t)] >= pages_needed:
            why = "running"
        elif nums and len(t.split()) <= 15 and not any(f.bold for f in row) and apart \
                and max(f.size for f in row) <= style.body_size and (i == 0 or i == len(rows) - 1) \
                and not re.match(r"^\d+(\.\d+)*\.?\s+[A-Z][a-z]", t):  # "1. Introduction" stays
            why = "running"
        for f in row:
            f.removed = why
        removed += len(row) if why else 0
    return removed


# ---------------------------------------------------------------------------------------
# 3. blocks -> Markdown


def _latex(frags: list[Frag]) -> str:
    """Glyphs of a display formula -> LaTeX. Smaller glyphs above/below the line's
    baseline become ^{..}/_{..}; a trailing "(n)" becomes \\tag{n}."""
    parts = []
    for f in frags:
        chars = [c for w in f.words for c in w.get("chars", [])]
        base = f.bottom
        out, mode = "", ""
        for c in sorted(chars, key=lambda c: c["x0"]):
            t = c["text"]
            small = c["size"] < 0.85 * f.size
            m = ""
            if small:  # raised above the baseline: superscript; sunk below: subscript
                m = "^" if c["bottom"] < base - 0.2 * f.size else "_" if c["bottom"] > base + 0.1 * f.size else ""
            if m != mode:
                if mode:
                    out += "}"
                if m:
                    out += m + "{"
                mode = m
            if "\U0001d400" <= t <= "\U0001d7ff":  # math italic/bold letters -> plain letters
                t = unicodedata.normalize("NFKC", t)
            cmd = LATEX.get(t, t)
            out += (cmd + " ") if cmd.startswith("\\") and len(cmd) > 2 else cmd
        if mode:
            out += "}"
        parts.append(re.sub(r"\(cid:\d+\)", "", out).strip())  # unmapped glyphs carry no text
    tex = clean_text(" ".join(parts))
    tex = re.sub(r"\s*\((\d{1,3}[a-z]?)\)\s*$", r" \\tag{\1}", tex)
    return re.sub(r"\s+", " ", tex).strip()


def _code(lines: list[Frag]) -> str:
    """Monospaced lines on their character grid: column = (x - left) / glyph width, so
    indentation and spacing survive (word-gap heuristics would split "add(a, b)")."""
    chars = [c for f in lines for w in f.words for c in w.get("chars", [])]
    if not chars:
        return "\n".join(f.text for f in lines)
    # pitch = the most common advance between neighbouring glyphs (bboxes can be narrower)
    steps = [round(b["x0"] - a["x0"], 1) for f in lines for w in f.words
             for a, b in zip(w.get("chars", []), w.get("chars", [])[1:]) if b["x0"] > a["x0"]]
    cw = Counter(steps).most_common(1)[0][0] if steps else statistics.median(c["x1"] - c["x0"] for c in chars)
    cw = cw or 1.0
    left = min(c["x0"] for c in chars)
    out = []
    for f in lines:
        line = ""
        for c in sorted((c for w in f.words for c in w.get("chars", [])), key=lambda c: c["x0"]):
            col = int(round((c["x0"] - left) / cw))
            line += " " * max(col - len(line), 0) + c["text"]
        out.append(clean_text(line).rstrip())
    return "\n".join(out)


def _is_heading(lines: list[Frag], style: DocStyle) -> int:
    """0 if not a heading, else its Markdown level (1 title, 2 section, 3 subsection)."""
    text = " ".join(f.text for f in lines).strip()
    if len(lines) > 2 or len(text) > 150 or not re.search(r"[A-Za-z\u4e00-\u9fff]", text) or _CAPTION.match(text):
        return 0
    size = max(f.size for f in lines)
    big = size >= 1.15 * style.body_size
    if "(cid:" in text or max(f.math_fraction() for f in lines) > 0.3:
        return 0  # a formula line with a number in front is not "1 Introduction"
    lettered = [w for f in lines for w in f.words if re.search(r"[^\W\d_]{2}", w["text"])]
    other_font = bool(lettered) and all(_font(w["fontname"]) != style.body_font for w in lettered)
    numbered = bool(_NUMBERED.match(text))
    if not big and (text.endswith((".", ",", ";")) and not numbered or len(text.split()) > 14):
        return 0
    if big:
        return 1 if size >= 1.6 * style.body_size else 2
    caps = numbered and text.upper() == text and len(text.split()) <= 8 and bool(re.search(r"[A-Z]{3,}", text))
    # small caps ("II. RELATED WORK" in IEEE) are set smaller than the body: no size test
    if ((all(f.bold for f in lines) or (numbered and other_font)) and size >= 0.95 * style.body_size) or caps:
        if numbered and not re.match(r"^\d+(\.\d+)*\.?\s+[A-Z\u4e00-\u9fff]|^[IVX]+\.\s|^[A-Z]\.\s", text):
            return 0  # "3 apples were ..." is a sentence, not a section
        depth = len(re.match(r"^(\d+(\.\d+)*)", text).group(1).split(".")) if re.match(r"^\d", text) else 1
        return 3 if depth >= 2 else 2
    return 0


def _paragraph(lines: list[Frag]) -> str:
    """Join a paragraph's lines; undo end-of-line hyphenation before lower-case words."""
    out = ""
    for f in lines:
        t = f.text.strip()
        if not out:
            out = t
        elif re.search(r"[A-Za-z]-$", out) and re.match(r"[a-z]", t):
            out = out[:-1] + t
        elif _CJK.match(out[-1:]) and _CJK.match(t[:1]):
            out += t
        else:
            out += " " + t
    return out


def _blocks(frags: list[Frag]) -> list[list[Frag]]:
    """Split consecutive fragments into blocks: a break at vertical gaps over ~0.7 line,
    a column change (x jump or moving up), a size/mono change, or an indented first line
    after a short line."""
    blocks: list[list[Frag]] = []
    for f in frags:
        if not blocks:
            blocks.append([f])
            continue
        p = blocks[-1][-1]
        h = max(p.bottom - p.top, f.bottom - f.top, 1.0)
        gap = f.top - p.bottom
        new = (gap > 0.7 * h or gap < -0.5 * h or abs(f.size - p.size) > 0.6 or f.mono != p.mono
               or (not f.mono and (f.x0 > p.x1 or f.x1 < p.x0)))
        if not new and not f.mono:
            col_right = max(max(x.x1 for x in blocks[-1]), f.x1)
            short_prev = p.x1 < col_right - 2 * p.size and re.search(r"[.!?:。]$", p.text.strip())
            # a short line ending a sentence ends the paragraph; a short line in another
            # font (a heading set in bold or a different face) ends its block too
            new = bool(short_prev) or (p.x1 < col_right - 2 * p.size and p.font != f.font) \
                or p.bold != f.bold
            # a centred line (shorter than its neighbour on both sides) stands alone
            # (and short: the lines of a centred multi-line title stay together)
            em = 2 * f.size
            pw, fw = p.x1 - p.x0, f.x1 - f.x0
            new = new or (p.x0 > f.x0 + em and p.x1 < f.x1 - em and pw < 0.5 * fw) \
                or (f.x0 > p.x0 + em and f.x1 < p.x1 - em and fw < 0.5 * pw)
        if not new and (p.math_fraction() > 0.5) != (f.math_fraction() > 0.5):
            new = True
        if new:
            blocks.append([f])
        else:
            blocks[-1].append(f)
    return blocks


def table_markdown(rows: list[list[str]]) -> str:
    width = max(len(r) for r in rows)
    cells = [[c.replace("|", "\\|") for c in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "| " + " | ".join(["-"] * width) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def page_markdown(lay: PageLayout, style: DocStyle, stem: str = "page") -> str:
    """Render one laid-out page as Markdown (running lines already marked removed)."""
    out: list[str] = []  # Markdown blocks in reading order
    kinds: list[str] = []  # their kinds: text, heading, code, formula, table, figure
    footnotes: list[str] = []
    run: list[Frag] = []
    fig = 0
    # Front matter of a first page: between the title (its first heading) and the first
    # section ("Abstract", "1 Introduction"), big or bold lines are authors and
    # affiliations, not headings.
    front = {"on": lay.number == 1, "title": False}

    def flush():
        prev_heading = None  # (level, last line) of the block just written, if a heading
        for b in _blocks(run):
            text = _paragraph(b)
            if not text:
                continue
            lvl = 0 if all(f.mono for f in b) else _is_heading(b, style)
            if lvl and front["on"]:
                if re.match(r"(abstract|summary|introduction|keywords)\b", text, re.I) or _NUMBERED.match(text):
                    front["on"] = False
                elif not front["title"]:
                    front["title"] = True
                elif not (prev_heading and prev_heading[0] == lvl):  # (a wrapped title continues)
                    lvl = 0
            wrapped = prev_heading and prev_heading[0] == lvl and not _NUMBERED.match(text) \
                and b[0].top - prev_heading[1].bottom < 0.9 * b[0].size and abs(b[0].size - prev_heading[1].size) < 0.5
            if lvl and wrapped:
                out[-1] += " " + text  # second line of a wrapped heading
                prev_heading = (lvl, b[-1])
                continue
            prev_heading = (lvl, b[-1]) if lvl else None
            if all(f.mono for f in b):
                emit("```\n" + _code(b) + "\n```", "code")
            elif lvl:
                emit("#" * lvl + " " + text, "heading")
            elif len(b) <= 3 and all(f.math_fraction() > 0.5 for f in b) and len(text) >= 3:
                tex = _latex(b)
                emit("$$" + tex + "$$" if tex else text, "formula")
            elif max(f.size for f in b) <= 0.85 * style.body_size and b[0].top > 0.7 * lay.height \
                    and _FOOTNOTE.match(text) and not _CAPTION.match(text):
                footnotes.append(text)  # read after the body, not between two columns
            elif kinds and kinds[-1] == "text" and not re.search(r"[.!?:;。！？]$", out[-1]) \
                    and re.match(r"[a-z]", text):
                # a paragraph cut by a column break (or a footnote moved away) continues
                out[-1] = out[-1][:-1] + text if re.search(r"[A-Za-z]-$", out[-1]) else out[-1] + " " + text
            else:
                emit(text, "text")
        run.clear()

    def emit(text: str, kind: str) -> None:
        out.append(text)
        kinds.append(kind)

    for o in lay.order or lay.frags:
        if isinstance(o, Frag):
            if not o.removed:
                run.append(o)
            continue
        flush()
        if o.kind == "table":
            emit(table_markdown(o.rows), "table")
        else:
            fig += 1
            emit(f"![Figure {lay.number}.{fig}]({stem}_p{lay.number}_fig{fig}.png)", "figure")
    flush()
    return "\n\n".join(out + footnotes)
