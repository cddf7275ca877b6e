"""Running headers, footers and page numbers, removed at document level: lines in the
top/bottom margin that repeat across pages with digits masked, bare page numbers, short
margin lines that carry a page number."""

from __future__ import annotations

import re
from collections import Counter

from opens1.corpus.pdf.fragments import PAGENUM, DocStyle, Frag, PageLayout


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
        nums = len(row) >= 2 and (PAGENUM.match(ends[0].text) or PAGENUM.match(ends[-1].text))
        i = next(k for k, r in enumerate(rows) if r is row)
        gaps = [rows[i + 1][0].top - row[0].bottom] if i + 1 < len(rows) else []
        gaps += [row[0].top - rows[i - 1][0].bottom] if i > 0 else []
        apart = min(gaps, default=99.0) > 0.9 * row[0].size
        why = ""
        if PAGENUM.match(t):
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
