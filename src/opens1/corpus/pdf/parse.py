"""One PDF to per-page Markdown and per-page records, as in Intern-S1: every page with a
text layer goes through the cheap layout path (layout.py, markdown.py) and is scored
(route.py); pages without a text layer, with a garbled one, or dense in formulas/symbols
go to a heavy parser (OCR or a VLM, ocr.py), whose output replaces the cheap one (the
cheap one stays if the heavy parser fails or there is none for the reason: formula pages
without a VLM). Running headers/footers are stripped over the whole document (margins.py)
and pages still garbled are marked dropped."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from opens1.common.atomic import atomic_write
from opens1.corpus.pdf import layout, ocr
from opens1.corpus.pdf.fragments import DocStyle, Item, PageLayout
from opens1.corpus.pdf.margins import strip_running_lines
from opens1.corpus.pdf.markdown import page_markdown
from opens1.corpus.pdf.route import RouterConfig, garble_ratio, route, score_page


@dataclass
class ParseConfig:
    out: str
    workers: int = 1
    vlm_endpoint: str | None = None
    vlm_model: str | None = None
    vlm_max_tokens: int = 4096  # keep prompt + this within the server's context
    ocr: bool = True  # use tesseract when installed
    ocr_lang: str | None = None  # None = chosen per page from the detected script
    dpi: int = 150  # render resolution for OCR / VLM
    formula_threshold: float = RouterConfig.formula_threshold
    symbol_threshold: float = RouterConfig.symbol_threshold
    garble_threshold: float = RouterConfig.garble_threshold
    display_math_threshold: int = RouterConfig.display_math_threshold
    drop_garble: float = 0.2  # drop a page whose final text is still this garbled
    dedup_threshold: float = 0.85  # MinHash Jaccard for page near-duplicates; <= 0 disables
    force: bool = False  # ignore done markers
    doc_timeout: float = 1800.0  # seconds per document; <= 0 disables
    doc_memory_mb: int = 2048  # address-space growth per document (RLIMIT_AS); <= 0 disables
    images: bool = False  # write the figure crops the Markdown links to

    def router(self) -> RouterConfig:
        return RouterConfig(formula_threshold=self.formula_threshold, symbol_threshold=self.symbol_threshold,
                            garble_threshold=self.garble_threshold,
                            display_math_threshold=self.display_math_threshold,
                            vlm=bool(self.vlm_endpoint and self.vlm_model),
                            ocr=self.ocr and ocr.tesseract_available())


def check_pdf(path: str) -> int:
    """Open the file with PDFium and return its page count, or raise ValueError /
    FileNotFoundError naming the problem (missing, empty, not a PDF, encrypted, broken)."""
    import pypdfium2 as pdfium

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if p.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    with open(p, "rb") as fh:
        head = fh.read(1024)
    if b"%PDF-" not in head:
        raise ValueError(f"{path}: not a PDF (no %PDF- header)")
    try:
        doc = pdfium.PdfDocument(str(p))
    except pdfium.PdfiumError as e:
        if "password" in str(e).lower():
            raise ValueError(f"{path}: encrypted PDF (needs a password)") from e
        raise ValueError(f"{path}: unreadable PDF ({e})") from e
    try:
        n = len(doc)
    finally:
        doc.close()
    if n == 0:
        raise ValueError(f"{path}: PDF has no pages")
    return n


def _heavy(path: str, index: int, parser: str, cfg: ParseConfig) -> tuple[str, str]:
    """Run the heavy parser on one page: (markdown, parser name)."""
    png = ocr.render_png(path, index, cfg.dpi)
    if parser == "vlm":
        return ocr.vlm_png(png, cfg.vlm_endpoint, cfg.vlm_model, max_tokens=cfg.vlm_max_tokens), f"vlm:{cfg.vlm_model}"
    return ocr.ocr_png(png, cfg.ocr_lang, dpi=cfg.dpi), "tesseract"


def parse_document(path: str, stem: str, cfg: ParseConfig) -> tuple[list[str], list[dict]]:
    """Parse one PDF: per-page Markdown and per-page records. Raises ValueError for files
    that cannot be opened; a page that fails is recorded and left empty."""
    import pdfplumber

    n_pages = check_pdf(path)
    rcfg = cfg.router()
    records: list[dict] = []
    texts: list[str | None] = []  # heavy-parser output; None = cheap path
    layouts: list[PageLayout | None] = []
    try:
        pdf = pdfplumber.open(path)
    except Exception as e:  # pdfminer rejects some files PDFium accepts
        raise ValueError(f"{path}: pdfplumber cannot open it ({type(e).__name__}: {e})") from e
    with pdf:
        for i, page in enumerate(pdf.pages[:n_pages]):
            rec = {"doc": stem, "file": path, "page": i + 1}
            t0 = time.perf_counter()
            try:
                # the cheap layout runs on every page with a text layer: it is both the
                # fallback and a routing signal (display-maths rows)
                lay = layout.extract_layout(page, i + 1) if len(page.chars) >= rcfg.min_chars else None
                scores = score_page(page, rcfg.min_chars, lay)
                r = route(scores, rcfg)
                rec.update(route="heavy" if r.heavy else "cheap", reason=r.reason, parser=r.parser,
                           scores=scores.to_dict())
                if r.parser == "text" and lay is None:  # no heavy parser for a scan: what the text path sees
                    lay = layout.extract_layout(page, i + 1)
            except Exception as e:  # one broken page must not sink the document
                rec.update(route="error", parser="none", error=f"{type(e).__name__}: {e}")
                r, lay = None, None
            rec["seconds"] = {"cheap": round(time.perf_counter() - t0, 4)}
            text = None
            if r is not None and r.parser in ("ocr", "vlm"):
                t1 = time.perf_counter()
                try:
                    text, rec["parser"] = _heavy(path, i, r.parser, cfg)
                except Exception as e:  # heavy parser down or failing: keep the cheap text
                    rec["heavy_error"] = f"{type(e).__name__}: {e}"[:500]
                    rec["parser"] = "text"
                    lay = lay or layout.extract_layout(page, i + 1)
                rec["seconds"]["heavy"] = round(time.perf_counter() - t1, 4)
            if r is not None and r.parser == "blank":
                text = ""
            records.append(rec)
            texts.append(text)
            layouts.append(lay if text is None else None)
            page.close()  # drop pdfplumber's per-page object cache: long books stay small
    # document-level passes over the cheap-path pages: body font, running lines
    cheap = [lay for lay in layouts if lay is not None]
    style = DocStyle.from_layouts(cheap)
    strip_running_lines(cheap, style)
    pages: list[str] = []
    for rec, text, lay in zip(records, texts, layouts):
        page_md = text if text is not None else page_markdown(lay, style, stem) if lay is not None else ""
        g = garble_ratio(page_md)
        rec["final_garble"] = round(g, 4)
        if g > cfg.drop_garble:
            rec["dropped"] = "garbled"
        rec["chars"] = len(page_md)
        pages.append(page_md)
        if cfg.images and lay is not None and text is None:
            rec["images"] = save_figures(path, lay, stem, Path(cfg.out))
    return pages, records


def save_figures(path: str, lay: PageLayout, stem: str, out: Path, *, dpi: int = 100) -> int:
    """Write the figures a cheap-path page links to (DIR/<stem>_p<n>_fig<k>.png, the
    names page_markdown uses) as crops of the page rendered by PDFium."""
    import pypdfium2 as pdfium

    figures = [o for o in lay.order if isinstance(o, Item) and o.kind == "figure"]
    if not figures:
        return 0
    doc = pdfium.PdfDocument(path)
    try:
        page = doc[lay.number - 1]
        for k, fig in enumerate(figures, 1):
            x0, top, x1, bottom = fig.bbox
            # crop = points to cut from the left, bottom, right and top edges
            crop = (max(x0, 0), max(lay.height - bottom, 0), max(lay.width - x1, 0), max(top, 0))
            image = page.render(scale=dpi / 72.0, crop=crop).to_pil()
            dst = out / f"{stem}_p{lay.number}_fig{k}.png"
            atomic_write(dst, write=lambda tmp, im=image: im.save(tmp, format="PNG"))
    finally:
        doc.close()
    return len(figures)


def doc_markdown(pages: list[str], records: list[dict]) -> str:
    """Join the kept pages. A sentence cut by a page break is put back together: when a
    page ends in prose without closing punctuation and the next starts in lower case."""
    out = ""
    for page in (p.strip() for p, r in zip(pages, records) if p.strip() and not r.get("dropped")):
        last = out.rsplit("\n\n", 1)[-1]
        prose = last and not re.match(r"[#|`$!]|```", last) and not re.search(r"[.!?:;。！？)\]]$", last)
        if prose and re.match(r"[a-z]", page):
            # "archi-" + "tecture" -> "architecture"; otherwise one space
            out = out[:-1] + page if re.search(r"[A-Za-z]-$", out) else out + " " + page
        else:
            out += ("\n\n" if out else "") + page
    return out.strip() + "\n"
