"""Words to a page layout in reading order: tables and raster figures are cut out first
so their text does not pollute the prose; the remaining words become line fragments; a
vertical gutter found by x-gaps splits a two-column page, and lines spanning the gutter
(titles, full-width figures) act as section breaks."""

from __future__ import annotations

import re
from collections import Counter

from opens1.corpus.pdf.fragments import Frag, Item, PageLayout, font_name, group_rows, inside, word_gap
from opens1.corpus.pdf.tables import find_tables, find_text_tables


def find_figures(page, min_area: float = 0.01) -> list[Item]:
    """Raster images covering at least `min_area` of the page, as figure references."""
    area = page.width * page.height
    out = []
    for im in page.images:
        x0, top, x1, bottom = im["x0"], im["top"], im["x1"], im["bottom"]
        if (x1 - x0) * (bottom - top) >= min_area * area:
            out.append(Item("figure", (max(x0, 0), max(top, 0), min(x1, page.width), min(bottom, page.height))))
    return out


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


def _frags(words: list[dict], width: float) -> tuple[list[Frag], float | None]:
    """Words -> fragments and the column gutter. Tentative fragments cut at every gap
    over 1 em locate the gutter; the final ones are cut only at the gutter and at very
    wide gaps (right-aligned page numbers), so wide justified spaces stay inside lines."""
    rows = [sorted(r, key=lambda w: w["x0"]) for r in group_rows(words)]
    gutter = find_gutter(_split(rows, lambda a, b: word_gap(a, b) > 1.0), width)

    def cut(a, b):
        at_gutter = gutter is not None and a["x1"] <= gutter + 1 and b["x0"] >= gutter - 1 and word_gap(a, b) > 0.5
        return at_gutter or word_gap(a, b) > 3.0

    return _split(rows, cut), gutter


def _frag(words: list[dict]) -> Frag:
    sizes: Counter = Counter()
    fonts: Counter = Counter()
    for w in words:
        sizes[round(w["size"], 1)] += len(w["text"])
        fonts[font_name(w["fontname"])] += len(w["text"])
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


def extract_layout(page, number: int) -> PageLayout:
    """One pdfplumber page -> PageLayout (fragments and items in reading order)."""
    words = page.extract_words(x_tolerance=1.0, y_tolerance=2.0, keep_blank_chars=False,
                               use_text_flow=False, extra_attrs=["size", "fontname"], return_chars=True)
    # rotated text (arXiv side stamps, rotated axis labels) would scatter single letters
    # over the reading order; it is left out of the layout
    words = [w for w in words if w["text"].strip() and w.get("upright", True)]
    n_chars = len(page.chars)
    items = find_tables(page, words)
    words = [w for w in words if not any(inside(w, it.bbox) for it in items)]
    if words:  # borderless tables among what the ruled ones left
        rows = [sorted(r, key=lambda w: w["x0"]) for r in group_rows(words)]
        gutter = find_gutter(_split(rows, lambda a, b: word_gap(a, b) > 1.0), page.width)
        text_tables = find_text_tables(words, page.width, gutter)
        words = [w for w in words if not any(inside(w, it.bbox, pad=0.5) for it in text_tables)]
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
