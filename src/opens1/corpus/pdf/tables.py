"""Tables on a PDF page: ruled tables (`find_tables`: pdfplumber's grid when there are
column rules, aligned-column detection inside booktabs-style horizontal rules) and
borderless ones (`find_text_tables`: runs of rows with 3+ cells, columns where 75% of
the rows have whitespace, a share of numeric cells)."""

from __future__ import annotations

import re
import statistics
from collections import Counter

from opens1.corpus.pdf.fragments import CAPTION, Item, clean_text, group_rows, inside, join_words, word_gap


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
            region = [w for w in words if inside(w, t.bbox)]
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
    for r in sorted(group_rows(words), key=lambda r: min(w["top"] for w in r)):
        r.sort(key=lambda w: w["x0"])
        cells = [[r[0]]]
        for w in r[1:]:
            if word_gap(cells[-1][-1], w) > 1.0:
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
    rest = [w for w in words if not any(inside(w, it.bbox, pad=0.5) for it in items)]
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
        if cells and CAPTION.match(join_words(cells[0])):
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
