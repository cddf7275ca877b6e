"""Page layout to Markdown: the cheap, text-layer path of `opens1 data parse-pdf`.

One page goes through three steps (modules of this package):

1. `layout.extract_layout(page)`: pdfplumber words (with font size and name) become line
   fragments; tables and raster figures are cut out first so their text does not
   pollute the prose. Tables come from ruling lines (`tables.find_tables`: pdfplumber's grid
   when there are column rules, aligned-column detection inside booktabs-style
   horizontal rules) and from aligned columns alone (`find_text_tables`: runs of rows
   with 3+ cells, columns where 75% of the rows have whitespace, a share of numeric
   cells). Fragments are ordered for reading: a vertical gutter found by x-gaps splits
   the page into two columns, and lines that span the gutter (titles, full-width
   figures) act as section breaks.
2. `margins.strip_running_lines(layouts)`: running headers and footers are removed at document
   level (lines in the top/bottom margin that repeat across pages with digits masked,
   bare page numbers, short margin lines that carry a page number).
3. `page_markdown(layout, style)` (this module): fragments become blocks (paragraph, heading, code,
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
from collections import Counter

from opens1.corpus.pdf.formulas import display_latex
from opens1.corpus.pdf.fragments import (CAPTION, CJK, FOOTNOTE, NUMBERED, DocStyle, Frag, PageLayout, clean_text,
                                         font_name)


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
    if len(lines) > 2 or len(text) > 150 or not re.search(r"[A-Za-z\u4e00-\u9fff]", text) or CAPTION.match(text):
        return 0
    size = max(f.size for f in lines)
    big = size >= 1.15 * style.body_size
    if "(cid:" in text or max(f.math_fraction() for f in lines) > 0.3:
        return 0  # a formula line with a number in front is not "1 Introduction"
    lettered = [w for f in lines for w in f.words if re.search(r"[^\W\d_]{2}", w["text"])]
    other_font = bool(lettered) and all(font_name(w["fontname"]) != style.body_font for w in lettered)
    numbered = bool(NUMBERED.match(text))
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
        elif CJK.match(out[-1:]) and CJK.match(t[:1]):
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
                if re.match(r"(abstract|summary|introduction|keywords)\b", text, re.I) or NUMBERED.match(text):
                    front["on"] = False
                elif not front["title"]:
                    front["title"] = True
                elif not (prev_heading and prev_heading[0] == lvl):  # (a wrapped title continues)
                    lvl = 0
            wrapped = prev_heading and prev_heading[0] == lvl and not NUMBERED.match(text) \
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
                tex = display_latex(b)
                emit("$$" + tex + "$$" if tex else text, "formula")
            elif max(f.size for f in b) <= 0.85 * style.body_size and b[0].top > 0.7 * lay.height \
                    and FOOTNOTE.match(text) and not CAPTION.match(text):
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
