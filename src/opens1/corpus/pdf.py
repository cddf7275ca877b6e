"""`opens1 data parse-pdf`: PDFs to Markdown with page-level routing, as in Intern-S1.

Usage:
    opens1 data parse-pdf paper.pdf more/*.pdf --out parsed/
    opens1 data parse-pdf pdfs/*.pdf --out parsed/ --workers 2
    opens1 data parse-pdf pdfs/*.pdf --out parsed/ --doc-timeout 60 --doc-memory 1024
    opens1 data parse-pdf scans/*.pdf --out parsed/ --vlm-endpoint http://127.0.0.1:8000/v1 --vlm-model internvl

Per document: every page with a text layer goes through the cheap layout path
(markdown.py) and is scored (route.py); pages without a text layer, with a garbled one,
or dense in formulas/symbols are routed to a heavy parser (OCR or a VLM, ocr.py), whose
output replaces the cheap one (the cheap one stays if the heavy parser fails or there
is none for the reason: formula pages without a VLM).
Running headers/footers are stripped over the whole document, garbled pages that no
heavy parser could fix are dropped, and the result is written as DIR/<stem>.md.
Then, across all documents, near-duplicate pages (boilerplate: licence pages, cover
sheets) are removed with MinHash-LSH (datasketch) over word 5-shingles.

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

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import resource
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

from opens1.common.atomic import atomic_write
from opens1.corpus import markdown as md
from opens1.corpus import ocr
from opens1.corpus.route import RouterConfig, garble_ratio, route, score_page

MARKER_VERSION = 1


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
    layouts: list[md.PageLayout | None] = []
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
                lay = md.extract_layout(page, i + 1) if len(page.chars) >= rcfg.min_chars else None
                scores = score_page(page, rcfg.min_chars, lay)
                r = route(scores, rcfg)
                rec.update(route="heavy" if r.heavy else "cheap", reason=r.reason, parser=r.parser,
                           scores=scores.to_dict())
                if r.parser == "text" and lay is None:  # no heavy parser for a scan: what the text path sees
                    lay = md.extract_layout(page, i + 1)
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
                    lay = lay or md.extract_layout(page, i + 1)
                rec["seconds"]["heavy"] = round(time.perf_counter() - t1, 4)
            if r is not None and r.parser == "blank":
                text = ""
            records.append(rec)
            texts.append(text)
            layouts.append(lay if text is None else None)
            page.close()  # drop pdfplumber's per-page object cache: long books stay small
    # document-level passes over the cheap-path pages: body font, running lines
    cheap = [lay for lay in layouts if lay is not None]
    style = md.DocStyle.from_layouts(cheap)
    md.strip_running_lines(cheap, style)
    pages: list[str] = []
    for rec, text, lay in zip(records, texts, layouts):
        page_md = text if text is not None else md.page_markdown(lay, style, stem) if lay is not None else ""
        g = garble_ratio(page_md)
        rec["final_garble"] = round(g, 4)
        if g > cfg.drop_garble:
            rec["dropped"] = "garbled"
        rec["chars"] = len(page_md)
        pages.append(page_md)
        if cfg.images and lay is not None and text is None:
            rec["images"] = save_figures(path, lay, stem, Path(cfg.out))
    return pages, records


def save_figures(path: str, lay: md.PageLayout, stem: str, out: Path, dpi: int = 100) -> int:
    """Write the figures a cheap-path page links to (DIR/<stem>_p<n>_fig<k>.png, the
    names page_markdown uses) as crops of the page rendered by PDFium."""
    import pypdfium2 as pdfium

    figures = [o for o in lay.order if isinstance(o, md.Item) and o.kind == "figure"]
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


def _doc_markdown(pages: list[str], records: list[dict]) -> str:
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


def _stems(paths: list[str]) -> list[str]:
    """Output names: the file stem, made unique with a path hash on collisions."""
    seen: set[str] = set()
    out = []
    for p in paths:
        s = re.sub(r"[^\w.\-]+", "_", Path(p).stem) or "doc"
        if s in seen:
            s = f"{s}-{hashlib.sha1(str(Path(p).resolve()).encode()).hexdigest()[:8]}"
        seen.add(s)
        out.append(s)
    return out


def process_one(path: str, stem: str, cfg: ParseConfig) -> dict:
    """Parse, write DIR/<stem>.md, then the done marker (both atomically). Returns the
    marker payload, or an error record. Runs in a worker process (see run)."""
    logging.getLogger("pdfminer").setLevel(logging.ERROR)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    try:
        pages, records = parse_document(path, stem, cfg)
    except Exception as e:  # MemoryError (past --doc-memory) included
        return _error(path, stem, f"{type(e).__name__}: {e}")
    atomic_write(out / f"{stem}.md", _doc_markdown(pages, records))
    payload = {"version": MARKER_VERSION, "file": path, "source": _fingerprint(path), "stem": stem,
               "pages": pages, "records": records, "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write(out / ".done" / f"{stem}.json", json.dumps(payload, ensure_ascii=False))
    return payload


def _error(path: str, stem: str, message: str) -> dict:
    return {"error": {"doc": stem, "file": path, "page": None, "route": "error", "error": message[:1000]}}


# ---------------------------------------------------------------- supervised workers


def _vm_bytes() -> int:
    """This process's address-space size (VmSize)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _worker_main(conn, cfg: ParseConfig) -> None:
    """A worker: documents in on `conn`, one (result, retire) out per document. After a
    MemoryError it retires (the heap may be in a poor state): the parent starts another."""
    os.setsid()  # its own process group: a kill takes OCR subprocesses down with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        path, stem = job
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if cfg.doc_memory_mb > 0:  # this document may grow the process by doc_memory_mb
            cap = _vm_bytes() + (cfg.doc_memory_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        res = process_one(path, stem, cfg)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        retire = "error" in res and res["error"]["error"].startswith("MemoryError")
        if retire:
            res["error"]["error"] = (f"MemoryError: the document needed more than --doc-memory "
                                     f"{cfg.doc_memory_mb} MiB " + res["error"]["error"][13:200]).strip()
        conn.send((res, retire))
        if retire:
            return


class _Worker:
    """The parent's handle on one worker process and the document it is parsing."""

    def __init__(self, ctx, cfg: ParseConfig):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg), daemon=True)
        self.proc.start()
        child.close()
        self.job: tuple[str, str] | None = None
        self.started = 0.0

    def assign(self, job: tuple[str, str]) -> None:
        self.job, self.started = job, time.monotonic()
        self.conn.send(job)

    def kill(self) -> None:
        for target in (lambda: os.killpg(self.proc.pid, signal.SIGKILL), self.proc.kill):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _outcome(w: _Worker, ready: list, cfg: ParseConfig) -> tuple[dict | None, bool]:
    """(the busy worker's result or error record, None while it runs; whether to replace it)."""
    path, stem = w.job
    if w.conn in ready or w.proc.sentinel in ready:
        try:
            if w.conn.poll():
                return w.conn.recv()  # (result, retire)
        except (EOFError, OSError):  # the pipe closed: the worker is exiting
            w.proc.join(timeout=10)
        if not w.proc.is_alive():
            return _error(path, stem, f"worker died ({_signal_name(w.proc.exitcode)}) while parsing this "
                                      "document, e.g. the OOM killer or a native crash"), True
    elif cfg.doc_timeout > 0 and time.monotonic() - w.started >= cfg.doc_timeout:
        # enforced from outside: the parser's own `except Exception` cannot swallow a kill
        return _error(path, stem, f"DocumentTimeout: document took longer than --doc-timeout "
                                  f"({cfg.doc_timeout:g} s); its worker was killed"), True
    return None, False


def parse_all(todo: list[tuple[str, str]], cfg: ParseConfig, collect) -> None:
    """Parse every (path, stem) in supervised worker processes; `collect` gets each
    result or error record (in completion order)."""
    ctx = mp.get_context("fork")  # workers inherit the loaded parsers (and test monkeypatches)
    queue = deque(todo)
    pool = [_Worker(ctx, cfg) for _ in range(min(max(cfg.workers, 1), len(todo)))]
    try:
        while queue or any(w.job for w in pool):
            for w in pool:
                if w.job is None and queue:
                    w.assign(queue.popleft())
            busy = [w for w in pool if w.job]
            timeout = None
            if cfg.doc_timeout > 0:
                timeout = max(min(w.started + cfg.doc_timeout for w in busy) - time.monotonic(), 0)
            ready = wait_ready([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
            for i, w in enumerate(pool):
                if not w.job:
                    continue
                res, replace = _outcome(w, ready, cfg)
                if res is None:
                    continue
                w.job = None
                if replace:  # dead, overdue or retired: a fresh process takes its place
                    w.kill()
                    pool[i] = _Worker(ctx, cfg)
                collect(res)
    finally:
        for w in pool:
            w.stop() if not w.job else w.kill()


def _fingerprint(path: str) -> list:
    """Size and mtime: a document replaced under the same name is parsed again."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _load_marker(out: Path, path: str, stem: str) -> dict | None:
    m = out / ".done" / f"{stem}.json"
    if not m.is_file() or not (out / f"{stem}.md").is_file():
        return None
    try:
        payload = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged marker means: parse again
    try:
        same = payload.get("source") == _fingerprint(path)
    except OSError:
        return None
    ok = payload.get("version") == MARKER_VERSION and payload.get("file") == path and same
    return payload if ok else None


def _shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < 2 * n and _CJK_RE.search(text):  # CJK: character n-grams instead
        chars = re.sub(r"\s+", "", text)
        return {chars[i:i + n] for i in range(max(len(chars) - n + 1, 0))}
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 0))}


_CJK_RE = re.compile(r"[\u4e00-\u9fff]")


def dedup_pages(docs: list[dict], threshold: float, min_shingles: int = 20) -> int:
    """Global page-level near-duplicate removal. Pages are visited in input order; a page
    whose MinHash (5-shingles, 128 permutations) LSH-matches an earlier kept page is
    marked dropped="duplicate" with duplicate_of. Pages too short to judge are kept.
    Returns the number of pages dropped."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    dropped = 0
    for doc in docs:
        for page, rec in zip(doc["pages"], doc["records"]):
            rec.pop("duplicate_of", None)
            if rec.get("dropped") == "duplicate":
                del rec["dropped"]  # recomputed on every run
            if rec.get("dropped"):
                continue
            sh = _shingles(page)
            if len(sh) < min_shingles:
                continue
            mh = MinHash(num_perm=128)
            mh.update_batch([s.encode("utf-8") for s in sh])
            hits = lsh.query(mh)
            key = f"{rec['doc']}#{rec['page']}"
            if hits:
                rec["dropped"], rec["duplicate_of"] = "duplicate", sorted(hits)[0]
                dropped += 1
            else:
                lsh.insert(key, mh)
    return dropped


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
        marker = None if cfg.force else _load_marker(out, path, stem)
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
        text = _doc_markdown(doc["pages"], doc["records"])
        p = out / f"{doc['stem']}.md"
        if not p.is_file() or p.read_text(encoding="utf-8") != text:
            atomic_write(p, text)
    records = [r for d in ordered for r in d["records"]] + errors
    atomic_write(out / "pages.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
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


def main(argv: list[str] | None = None) -> int:
    from opens1.cli.util import HelpFormatter, add_quiet_argument, progress, require

    ap = argparse.ArgumentParser(prog="opens1 data parse-pdf", description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("pdfs", nargs="+", help="PDF files")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (one document each)")
    ap.add_argument("--vlm-endpoint", help="OpenAI-compatible base URL of a VLM, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--vlm-model", help="model name to ask the VLM endpoint for")
    ap.add_argument("--vlm-max-tokens", type=int, default=4096, help="new tokens asked of the VLM per page")
    ap.add_argument("--no-ocr", action="store_true", help="never run tesseract")
    ap.add_argument("--ocr-lang", help="tesseract languages, e.g. eng+chi_sim (default: by detected script)")
    ap.add_argument("--dpi", type=int, default=150, help="render resolution for OCR/VLM")
    ap.add_argument("--formula-threshold", type=float, default=RouterConfig.formula_threshold)
    ap.add_argument("--symbol-threshold", type=float, default=RouterConfig.symbol_threshold)
    ap.add_argument("--garble-threshold", type=float, default=RouterConfig.garble_threshold)
    ap.add_argument("--display-math-threshold", type=int, default=RouterConfig.display_math_threshold)
    ap.add_argument("--dedup-threshold", type=float, default=0.85, help="MinHash Jaccard; 0 disables")
    ap.add_argument("--force", action="store_true", help="reparse documents that are already done")
    ap.add_argument("--doc-timeout", type=float, default=1800.0, help="seconds per document (0: none)")
    ap.add_argument("--doc-memory", type=int, default=2048,
                    help="MiB a document may grow its worker's address space by (0: no cap)")
    ap.add_argument("--images", action="store_true", help="write the figures the Markdown links to as PNG crops")
    add_quiet_argument(ap)
    a = ap.parse_args(argv)
    if bool(a.vlm_endpoint) != bool(a.vlm_model):
        ap.error("--vlm-endpoint and --vlm-model go together")
    if a.workers < 1:
        ap.error("--workers must be >= 1")
    if a.vlm_endpoint:
        require("openai", "opens1 data parse-pdf --vlm-endpoint")
    cfg = ParseConfig(out=a.out, workers=a.workers, vlm_endpoint=a.vlm_endpoint, vlm_model=a.vlm_model,
                      vlm_max_tokens=a.vlm_max_tokens,
                      ocr=not a.no_ocr, ocr_lang=a.ocr_lang, dpi=a.dpi, formula_threshold=a.formula_threshold,
                      symbol_threshold=a.symbol_threshold, garble_threshold=a.garble_threshold,
                      display_math_threshold=a.display_math_threshold,
                      dedup_threshold=a.dedup_threshold, force=a.force, doc_timeout=a.doc_timeout,
                      doc_memory_mb=a.doc_memory, images=a.images)
    with progress(len(a.pdfs), "parse-pdf", quiet=a.quiet, unit="doc") as bar:
        summary = run([str(p) for p in a.pdfs], cfg, log=lambda s: bar.write(s, file=sys.stderr),
                      tick=lambda: bar.update(1))
    print(json.dumps(summary, indent=1))
    return 0 if summary["documents"] or not summary["errors"] else 1


