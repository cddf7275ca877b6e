"""One document end to end and its done marker: DIR/<stem>.md, then
DIR/.done/<stem>.json (page records and page Markdown), both written atomically. A rerun
skips documents whose marker matches the file (same path, size and mtime), so runs resume
after a crash."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from opens1.common.atomic import atomic_write
from opens1.corpus.pdf import parse
from opens1.corpus.pdf.parse import ParseConfig, doc_markdown

MARKER_VERSION = 1


def process_one(path: str, stem: str, cfg: ParseConfig) -> dict:
    """Parse, write DIR/<stem>.md, then the done marker (both atomically). Returns the
    marker payload, or an error record. Runs in a worker process (workers.py)."""
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    try:
        pages, records = parse.parse_document(path, stem, cfg)  # looked up per call: tests replace it
    except Exception as e:  # MemoryError (past --doc-memory) included
        return error_record(path, stem, f"{type(e).__name__}: {e}")
    atomic_write(out / f"{stem}.md", doc_markdown(pages, records))
    payload = {"version": MARKER_VERSION, "file": path, "source": fingerprint(path), "stem": stem,
               "pages": pages, "records": records, "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write(out / ".done" / f"{stem}.json", json.dumps(payload, ensure_ascii=False))
    return payload


def error_record(path: str, stem: str, message: str) -> dict:
    return {"error": {"doc": stem, "file": path, "page": None, "route": "error", "error": message[:1000]}}


def fingerprint(path: str) -> list:
    """Size and mtime: a document replaced under the same name is parsed again."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def load_marker(out: Path, path: str, stem: str) -> dict | None:
    m = out / ".done" / f"{stem}.json"
    if not m.is_file() or not (out / f"{stem}.md").is_file():
        return None
    try:
        payload = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged marker means: parse again
    try:
        same = payload.get("source") == fingerprint(path)
    except OSError:
        return None
    ok = payload.get("version") == MARKER_VERSION and payload.get("file") == path and same
    return payload if ok else None
