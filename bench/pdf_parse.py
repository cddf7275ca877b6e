"""Benchmark `opens1 data parse-pdf` against plain pypdfium2 text extraction.

    python bench/pdf_parse.py                      # ../shared/data/pdfs, OCR on 2 scanned pages
    python bench/pdf_parse.py --ocr-pages 8        # the whole scanned book
    python bench/pdf_parse.py --show arxiv_2305.03393v1_p9   # print our Markdown for one file

Metrics (on the PDFs that have a ground-truth .md beside them):
- word similarity: difflib SequenceMatcher ratio between the two normalised word
  sequences (HTML comments removed, lower-cased, tokens = regex \\w+, so Markdown syntax
  does not count) = 2*matches / (len(a)+len(b)), order-sensitive. Word-multiset F1 is
  printed beside it (order-free).
- headings recovered: ground-truth heading lines (#...) for which some heading of ours has
  word similarity >= 0.8; table rows recovered: ground-truth pipe-table rows for which
  some table row of ours has word similarity >= 0.8. Plain text has no Markdown, so its
  heading/table counts are 0 by construction.
Over all PDFs: the routed fraction (pages the router sends to a heavy parser) and the
cheap-path speed in pages/s on one core against plain pypdfium2 extraction (the floor:
no layout at all). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "pdfs"


def words(text: str) -> list[str]:
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    return re.findall(r"\w+", text.lower())


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, words(a), words(b), autojunk=False).ratio()


def multiset_f1(a: str, b: str) -> float:
    ca, cb = Counter(words(a)), Counter(words(b))
    tp = sum((ca & cb).values())
    return 2 * tp / max(sum(ca.values()) + sum(cb.values()), 1)


def headings(text: str) -> list[str]:
    return [ln.lstrip("#").strip() for ln in text.splitlines() if re.match(r"^#{1,6}\s", ln)]


def table_rows(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("|") and not re.fullmatch(r"[|\s:\-]+", ln)]


def recovered(truth: list[str], ours: list[str], thr: float = 0.8) -> int:
    return sum(any(similarity(t, o) >= thr for o in ours) for t in truth)


def plain_text(path: Path) -> tuple[str, int]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(path))
    text = "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    n = len(doc)
    doc.close()
    return text, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdfs", default=str(DEFAULT))
    ap.add_argument("--ocr-pages", type=int, default=2, help="OCR this many pages of the scanned book")
    ap.add_argument("--show", help="print our Markdown for this stem")
    a = ap.parse_args(argv)
    import logging

    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    from opens1.corpus.pdf import ocr
    from opens1.corpus.pdf.parse import ParseConfig, parse_document
    from opens1.corpus.pdf.route import RouterConfig, garble_ratio, route, score_page

    root = Path(a.pdfs)
    pdfs = sorted(root.glob("*.pdf"))
    if not pdfs:
        print(f"no PDFs under {root}", file=sys.stderr)
        return 1
    cfg = ParseConfig(out=tempfile.mkdtemp(), ocr=False)  # OCR measured separately below
    print(f"{'document':32s} {'sim ours':>8s} {'sim plain':>9s} {'F1 ours':>7s} {'F1 plain':>8s} "
          f"{'headings':>9s} {'table rows':>10s}")
    ours_pages = plain_pages = 0
    ours_t = plain_t = 0.0
    routed = total = 0
    reasons: Counter = Counter()
    for pdf in pdfs:
        t0 = time.perf_counter()
        pages, recs = parse_document(str(pdf), pdf.stem, cfg)
        dt = time.perf_counter() - t0
        text = "\n\n".join(p for p in pages if p)
        routed += sum(r.get("route") == "heavy" for r in recs)
        reasons.update(r.get("reason", "error") for r in recs if r.get("route") == "heavy")
        total += len(recs)
        cheap = [r for r in recs if r.get("parser") == "text"]
        if len(cheap) == len(recs):  # speed over documents that are all text layer
            ours_pages += len(recs)
            ours_t += dt
            t0 = time.perf_counter()
            plain, n = plain_text(pdf)
            plain_t += time.perf_counter() - t0
            plain_pages += n
        else:
            plain, _ = plain_text(pdf)
        if a.show == pdf.stem:
            print(text)
        gt = pdf.with_suffix(".md")
        if gt.is_file():
            truth = gt.read_text(encoding="utf-8")
            h, tr = headings(truth), table_rows(truth)
            print(f"{pdf.stem:32s} {similarity(text, truth):8.3f} {similarity(plain, truth):9.3f} "
                  f"{multiset_f1(text, truth):7.3f} {multiset_f1(plain, truth):8.3f} "
                  f"{recovered(h, headings(text)):>4d}/{len(h):<4d} {recovered(tr, table_rows(text)):>5d}/{len(tr):<4d}")
    print(f"\nrouted to a heavy parser: {routed}/{total} pages = {routed / max(total, 1):.3f} "
          f"({', '.join(f'{k}: {v}' for k, v in reasons.most_common())}; Intern-S1 routes 3-5% of a "
          f"general corpus, these test PDFs were picked for formulas and scans)")
    ours_ps, plain_ps = ours_pages / max(ours_t, 1e-9), plain_pages / max(plain_t, 1e-9)
    print(f"cheap path: {ours_ps:.1f} pages/s, plain pypdfium2: {plain_ps:.1f} pages/s "
          f"(ours/plain = {ours_ps / plain_ps:.3f}; one process, noisy shared machine)")

    scan = root / "mineru_scanned_book.pdf"
    if scan.is_file() and a.ocr_pages > 0:
        if not ocr.tesseract_available():
            print("OCR: tesseract not installed (apt-get install -y tesseract-ocr tesseract-ocr-chi-sim)")
        else:
            import pdfplumber

            with pdfplumber.open(str(scan)) as doc:
                n = min(a.ocr_pages, len(doc.pages))
                decisions = [route(score_page(p), RouterConfig(ocr=True)) for p in doc.pages[:n]]
            t0 = time.perf_counter()
            texts = [ocr.ocr_page(str(scan), i, dpi=150) for i in range(n)]
            dt = time.perf_counter() - t0
            body = re.sub(r"\s+", "", "".join(texts))
            cjk = len(re.findall(r"[\u4e00-\u9fff]", body)) / max(len(body), 1)
            plain, _ = plain_text(scan)
            print(f"OCR scanned book: {n} pages routed {[d.parser for d in decisions]}, "
                  f"{len(body)} chars ({cjk:.2f} CJK, garble {garble_ratio(''.join(texts)):.3f}) "
                  f"vs plain text layer {len(plain.strip())} chars; {dt / n:.1f} s/page")
            print("  first OCR line:", texts[0].splitlines()[2 if len(texts[0].splitlines()) > 2 else 0][:80])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
