"""Per-page scores and the router that sends hard pages to a heavy parser.

Intern-S1 runs every page through a cheap parser (MinerU) and sends only the pages a
formula/symbol detector flags (5% of archived-library pages, 3% of web PDFs) to a VLM
parser about 20x slower. We do the same with signals read off the PDF text layer:

- `text_layer`: the page has at least `min_chars` glyphs with text. Without one
  (scans, or text drawn as vector outlines) the cheap parser sees nothing, so the page
  must be OCRed or go to the VLM; a page-sized image under a few glyphs is a scan too.
- `formula_density`: share of glyphs set in a math font (CMMI, CMSY, STIX, ...) or that
  are math symbols (Greek, operators, arrows). Display maths is where the cheap path
  loses most (sub/superscripts, fractions, unmapped glyphs).
- `symbol_density`: share of glyphs that are neither letters, digits, spaces nor plain
  punctuation: chemistry sheets and dense notation score high here.
- `display_math`: rows the layout recognises as display equations (mostly math glyphs,
  or an equation number "(n)" set apart). Catches maths set in text fonts.
- `garble_ratio`: share of text that is clearly broken: unmapped glyphs ("(cid:12)"),
  U+FFFD, private-use code points, control characters, Latin-1 mojibake. A garbled text
  layer is better re-read from the pixels.

Thresholds are not reported by the paper; the defaults were set so that the formula-
dense pages of our test papers are routed (see bench/pdf_parse.py for the fraction).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass

from opens1.corpus.pdf.fragments import MATHCHAR, MATHFONT
from opens1.corpus.pdf.layout import count_display_math

_CID = re.compile(r"\(cid:\d+\)")
_MOJIBAKE = re.compile(r"[ÃÂ][\u0080-\u00bf]|â€")


@dataclass
class PageScores:
    n_chars: int  # glyphs with text in the text layer
    text_layer: bool
    image_coverage: float  # share of the page area covered by raster images (capped at 1)
    formula_density: float
    symbol_density: float
    garble_ratio: float
    display_math: int = 0  # rows of display maths found by the layout (layout.count_display_math)
    n_vectors: int = 0  # vector drawing objects (curves, rects, lines): text drawn as outlines

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class RouterConfig:
    min_chars: int = 30  # fewer glyphs than this = no usable text layer
    formula_threshold: float = 0.04  # formula_density above this -> heavy
    symbol_threshold: float = 0.10  # symbol_density above this -> heavy
    garble_threshold: float = 0.05  # garble_ratio above this -> heavy
    display_math_threshold: int = 5  # this many display-maths rows on a page -> heavy
    min_vectors: int = 50  # a page without text but this many vector objects is not blank
    scan_max_chars: int = 300  # an image over 60% of the page and fewer glyphs = a scan
    vlm: bool = False  # is a VLM endpoint configured
    ocr: bool = True  # is OCR (tesseract) available


@dataclass
class Route:
    heavy: bool  # the router wants a heavy parser for this page
    parser: str  # what will actually parse it: "text" | "ocr" | "vlm" | "blank"
    reason: str  # "ok" | "no-text-layer" | "scanned" | "formula" | "symbols" | "garbled" | "blank"


def garble_ratio(text: str) -> float:
    """Share of characters of `text` that belong to broken text (see module docstring)."""
    if not text:
        return 0.0
    bad = sum(len(m) for m in _CID.findall(text)) + 2 * len(_MOJIBAKE.findall(text))
    rest = _CID.sub("", text)
    for ch in rest:
        cat = unicodedata.category(ch)
        if ch == "\ufffd" or cat == "Co" or (cat == "Cc" and ch not in "\n\t\r"):
            bad += 1
    return min(bad / len(text), 1.0)


def _symbolic(ch: str) -> bool:
    if ch.isalnum() or ch.isspace():
        return False
    return ch not in ".,;:!?'\"()[]-–—/%&"


def score_page(page, min_chars: int = 30, layout=None) -> PageScores:
    """Scores for one pdfplumber page from its glyphs and images; `layout` (a
    layout.PageLayout of the page, when the cheap path already built it) adds the
    display-maths count."""
    chars = [c for c in page.chars if c["text"].strip()]
    n = len(chars)
    text = "".join(c["text"] for c in chars)
    math = sum(bool(MATHFONT.search(c["fontname"])) or bool(MATHCHAR.match(c["text"])) for c in chars)
    sym = sum(_symbolic(c["text"][:1]) for c in chars)
    area = float(page.width * page.height) or 1.0
    cover = sum(max(im["x1"] - im["x0"], 0) * max(im["bottom"] - im["top"], 0) for im in page.images) / area
    return PageScores(
        n_chars=n, text_layer=n >= min_chars, image_coverage=min(cover, 1.0),
        formula_density=math / max(n, 1), symbol_density=sym / max(n, 1), garble_ratio=garble_ratio(text),
        display_math=count_display_math(layout) if layout is not None else 0,
        n_vectors=len(page.curves) + len(page.rects) + len(page.lines) if n < min_chars else 0,
    )


def route(s: PageScores, cfg: RouterConfig) -> Route:
    """Decide the parser for a page. The heavy parser is the VLM when one is configured,
    else OCR for pages whose text layer is missing or garbled; formula pages without a
    VLM stay on the text path (OCR would lose the maths the text layer has) but are
    still counted as routed, so the routed fraction does not depend on the set-up."""
    if not s.text_layer:
        if s.n_chars == 0 and s.image_coverage < 0.01 and s.n_vectors < cfg.min_vectors:
            return Route(False, "blank", "blank")
        return Route(True, "vlm" if cfg.vlm else "ocr" if cfg.ocr else "text", "no-text-layer")
    if s.image_coverage >= 0.6 and s.n_chars < cfg.scan_max_chars:
        # a scan with a stamp or a thin text line on top ("Downloaded from ...")
        return Route(True, "vlm" if cfg.vlm else "ocr" if cfg.ocr else "text", "scanned")
    if s.garble_ratio > cfg.garble_threshold:
        return Route(True, "vlm" if cfg.vlm else "ocr" if cfg.ocr else "text", "garbled")
    if s.formula_density > cfg.formula_threshold or s.display_math >= cfg.display_math_threshold:
        return Route(True, "vlm" if cfg.vlm else "text", "formula")
    if s.symbol_density > cfg.symbol_threshold:
        return Route(True, "vlm" if cfg.vlm else "text", "symbols")
    return Route(False, "text", "ok")
