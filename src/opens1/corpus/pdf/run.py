"""`opens1 data parse-pdf`: PDFs to Markdown with page-level routing, as in Intern-S1.

Usage (the command line is src/opens1/cli/data.py):
    opens1 data parse-pdf paper.pdf more/*.pdf --out parsed/
    opens1 data parse-pdf pdfs/*.pdf --out parsed/ --workers 2
    opens1 data parse-pdf pdfs/*.pdf --out parsed/ --doc-timeout 60 --doc-memory 1024
    opens1 data parse-pdf scans/*.pdf --out parsed/ --vlm-endpoint http://127.0.0.1:8000/v1 --vlm-model internvl

Per document (parse.py): every page with a text layer goes through the cheap layout path
(layout.py, markdown.py) and is scored (route.py); pages without a text layer, with a garbled one,
or dense in formulas/symbols are routed to a heavy parser (OCR or a VLM, ocr.py), whose
output replaces the cheap one (the cheap one stays if the heavy parser fails or there
is none for the reason: formula pages without a VLM).
Running headers/footers are stripped over the whole document, garbled pages that no
heavy parser could fix are dropped, and the result is written as DIR/<stem>.md.
Then, across all documents, near-duplicate pages (boilerplate: licence pages, cover
sheets) are removed with MinHash-LSH (dedup.py, the MinHash of corpus/dedup.py).

Outputs:
    DIR/<stem>.md          one Markdown file per document
    DIR/<stem>_p<n>_fig<k>.png  with --images: the raster figures the Markdown links to
    DIR/pages.jsonl        one record per page (route, parser, scores, timings, drop
                           reason) and one error record per unreadable file
    DIR/.done/<stem>.json  per-document done marker (page records + page Markdown),
                           written atomically after the .md; a rerun skips documents
                           that have one (same path, size and mtime), so runs
                           resume after a crash.
    DIR/summary.json       counts: documents, errors, pages, routed fraction, parsers,
                           pages and share of characters dropped.
Nothing is dropped silently: every page removed carries its reason in pages.jsonl, and
every file that cannot be parsed (missing, empty, not a PDF, encrypted, broken, past
--doc-timeout or --doc-memory, or whose worker died) gets an error record while the run
goes on. Documents run in worker processes (--workers, one document at a time each) that
the parent supervises: it kills a worker whose document runs past --doc-timeout (the
parser cannot swallow that: the clock is outside it), records a worker that dies (as by
the OOM killer) against its document only, and starts a fresh worker in either case. Each
document may grow its worker's address space by --doc-memory MiB (RLIMIT_AS: a larger
allocation fails with MemoryError). The parent alone writes pages.jsonl, so it needs no
locking.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from opens1.common.atomic import atomic_write
from opens1.common.hashing import text_digest
from opens1.common.jsonl import write_jsonl
from opens1.corpus.pdf import ocr
from opens1.corpus.pdf.dedup import dedup_pages
from opens1.corpus.pdf.markers import load_marker
from opens1.corpus.pdf.parse import ParseConfig, doc_markdown
from opens1.corpus.pdf.workers import parse_all


def _stems(paths: list[str]) -> list[str]:
    """Output names: the file stem, made unique with a path hash on collisions."""
    seen: set[str] = set()
    out = []
    for p in paths:
        s = re.sub(r"[^\w.\-]+", "_", Path(p).stem) or "doc"
        if s in seen:
            s = f"{s}-{text_digest(str(Path(p).resolve()), length=8)}"
        seen.add(s)
        out.append(s)
    return out


OCR_MISSING = ("page(s) without a usable text layer (scanned) need OCR, but tesseract is not installed: "
               "their text is missing (install tesseract-ocr, or pass --vlm-endpoint; --no-ocr silences this)")


def _missing_ocr_errors(docs: list[dict], cfg: ParseConfig, log) -> list[dict]:
    """One error record per document whose scanned pages fell back to the text path because
    tesseract is missing (a warning once): the summary's "errors" counts them."""
    if not cfg.ocr or cfg.router().vlm or ocr.tesseract_available():
        return []
    out = []
    for doc in docs:
        n = sum(r.get("route") == "heavy" and r.get("parser") == "text" and r.get("reason") in ("no-text-layer", "scanned")
                and "heavy_error" not in r for r in doc["records"])
        if n:
            out.append({"doc": doc["stem"], "file": doc["file"], "page": None, "route": "error",
                        "error": f"{doc['file']}: {n} {OCR_MISSING}"})
    if out:
        log(f"warning: {len(out)} document(s) have {OCR_MISSING}")
    return out


def run(paths: list[str], cfg: ParseConfig, log=print, tick=None) -> dict:
    """Parse `paths` into cfg.out; returns a summary (also printed by main). `tick()` is
    called once per finished document (a progress bar)."""
    out = Path(cfg.out)
    (out / ".done").mkdir(parents=True, exist_ok=True)
    stems = _stems(paths)
    docs: dict[str, dict] = {}
    errors: list[dict] = []
    todo = []
    for path, stem in zip(paths, stems):
        marker = None if cfg.force else load_marker(out, path, stem)
        if marker is not None:
            docs[stem] = marker
        else:
            todo.append((path, stem))
    skipped = len(docs)

    def collect(res: dict) -> None:
        if tick is not None:
            tick()
        if "error" in res:
            errors.append(res["error"])
            log(f"error: {res['error']['error']}")
        else:
            docs[res["stem"]] = res
            log(f"parsed {res['file']} ({len(res['pages'])} pages, {res['seconds']:.1f}s)")

    parse_all(todo, cfg, collect)
    errors += _missing_ocr_errors([docs[s] for s in stems if s in docs], cfg, log)
    order = {stem: i for i, stem in enumerate(stems)}
    errors.sort(key=lambda e: order.get(e["doc"], len(order)))  # input order, however the workers finished
    ordered = [docs[s] for s in stems if s in docs]  # input order: the first copy of a page wins
    n_dup = dedup_pages(ordered, cfg.dedup_threshold) if cfg.dedup_threshold > 0 else 0
    for doc in ordered:  # rewrite documents whose pages changed status
        text = doc_markdown(doc["pages"], doc["records"])
        p = out / f"{doc['stem']}.md"
        if not p.is_file() or p.read_text(encoding="utf-8") != text:
            atomic_write(p, text)
    records = [r for d in ordered for r in d["records"]] + errors
    write_jsonl(out / "pages.jsonl", records)
    pages = [r for r in records if r.get("page") is not None]
    chars_all = sum(r.get("chars", 0) for r in pages)
    chars_kept = sum(r.get("chars", 0) for r in pages if not r.get("dropped"))
    summary = {
        "documents": len(ordered), "skipped_done": skipped, "errors": len(errors), "pages": len(pages),
        "routed_heavy": sum(r.get("route") == "heavy" for r in pages),
        "routed_fraction": round(sum(r.get("route") == "heavy" for r in pages) / max(len(pages), 1), 4),
        "by_parser": {p: sum(r.get("parser") == p for r in pages) for p in sorted({r.get("parser") for r in pages})},
        "dropped_duplicate": n_dup, "dropped_garbled": sum(r.get("dropped") == "garbled" for r in pages),
        "chars_removed_fraction": round(1 - chars_kept / max(chars_all, 1), 4),
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    return summary
