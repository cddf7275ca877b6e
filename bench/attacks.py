"""What the defences against hostile input cost and how fast they act (issue "Hold under attack").

    python bench/attacks.py                 # every row
    python bench/attacks.py --only pdf      # rows whose name starts with "pdf"
    python bench/attacks.py --quick         # smaller inputs, no full-parse reference

Each row times our defended path against a reference in the same run and prints both
and their ratio:
- pdf_abandon: a 13 KB 4-page PDF, each page 200 x 200 ruling lines (grid_pdf: ~47 s a
  page) parsed in one batch with a normal page under `--doc-timeout` 2 and 10: the
  seconds until its error record, and the whole batch; reference: the same PDF without a
  timeout, i.e. the document run to its end, as the swallowed, never re-armed timeout let
  it (--quick: 2 pages of 150 x 150).
- sandbox_run / sandbox_tests: seconds per `run_python("pass")` and per `verify("code",
  ...)` with one assert test in the bubblewrap sandbox (the tests in a second sandbox);
  reference: one bare `python -I -B -c` subprocess running the solution and its assert
  (the floor of the old in-process harness: one interpreter start, no isolation). The
  note gives the same call in the opt-in unisolated mode.
Rows register in ROWS (name -> function returning dicts); the server rows plug in the
same way. Timings on a shared machine are noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


# ------------------------------------------------------------------------------ inputs


def _pdf(body: bytes, size: tuple[int, int] = (612, 792), pages: int = 1) -> bytes:
    """A PDF of `pages` pages that share one content stream, with a correct xref table."""
    kids = b" ".join(b"%d 0 R" % (5 + k) for k in range(pages))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 3 0 R " % size
             + b"/Resources << /Font << /F1 4 0 R >> >> >>"] * pages
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)


def grid_pdf(n: int = 200, pitch: float = 7.5, pages: int = 1) -> bytes:
    """n long horizontal and n long vertical ruling lines `pitch` points apart (wider than
    pdfplumber's snap tolerance, so none merge) and one line of text, on each page: a page
    the table finder spends O(n^4)-ish time on (n=100: ~3 s, 150: ~12 s, 200: ~47 s on one
    core). Before the parent enforced --doc-timeout, the in-process alarm fired inside the
    table finder, whose `except Exception` swallowed it (that page lost its tables, the
    document was reported as parsed) and was never re-armed: every later page ran in full."""
    end = 20 + pitch * n
    parts = []
    for i in range(n):
        c = 20 + pitch * i
        parts.append(b"20 %.2f m %.2f %.2f l S" % (c, end, c))
        parts.append(b"%.2f 20 m %.2f %.2f l S" % (c, c, end))
    parts.append(b"BT /F1 10 Tf 40 30 Td (a page of ruling lines that makes the table finder slow) Tj ET")
    side = int(end + 20)
    return _pdf(b"\n".join(parts), (side, side), pages)


def text_pdf(words: str = "a normal page of prose that parses in a moment") -> bytes:
    lines = b" ".join(b"0 -14 Td (%s) Tj" % words.encode() for _ in range(20))
    return _pdf(b"BT /F1 11 Tf 72 720 Td " + lines + b" ET")


# ------------------------------------------------------------------------------ rows


def row_pdf_abandon(args) -> list[dict]:
    from opens1.corpus.pdf import ParseConfig, run

    n, pages = (150, 2) if args.quick else (200, 4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        slow, fast = Path(tmp, "grid.pdf"), Path(tmp, "prose.pdf")
        slow.write_bytes(grid_pdf(n, pages=pages))
        fast.write_bytes(text_pdf())
        ref = None
        if not args.quick:
            t0 = time.perf_counter()
            run([str(slow)], ParseConfig(out=str(Path(tmp, "ref")), doc_timeout=0, ocr=False), log=lambda s: None)
            ref = time.perf_counter() - t0
        for timeout in (2.0, 10.0):
            t0, seen = time.perf_counter(), {}

            def log(line: str, t0=t0, seen=seen) -> None:
                if line.startswith("error:") and "DocumentTimeout" in line:
                    seen["abandoned"] = time.perf_counter() - t0

            out = Path(tmp, f"t{timeout:g}")
            summary = run([str(slow), str(fast)], ParseConfig(out=str(out), doc_timeout=timeout, ocr=False,
                                                               workers=2), log=log)
            total = time.perf_counter() - t0
            size = f"{pages} p. grid {n}x{n}, {slow.stat().st_size // 1024} KB"
            rows.append({"row": f"pdf_abandon --doc-timeout {timeout:g}", "input": size,
                         "ours_s": seen.get("abandoned"), "ref_s": ref,
                         "note": f"batch {total:.1f} s, {summary['documents']} parsed, {summary['errors']} error"})
    return rows


def _per_call(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row_sandbox(args) -> list[dict]:
    import subprocess

    from opens1.rewards import verify
    from opens1.rewards.code import isolation, run_python

    mode, why = isolation()
    if mode is None:
        return [{"row": "sandbox", "input": "-", "ours_s": None, "ref_s": None, "note": f"no sandbox: {why}"}]
    n = 5 if args.quick else 20
    sol, tests = "```python\ndef f(x):\n    return 2 * x\n```", ["assert f(2) == 4"]
    bare = _per_call(lambda: subprocess.run([sys.executable, "-I", "-B", "-c", "def f(x):\n return 2 * x\n"
                                             "assert f(2) == 4"], check=True), n)
    out = []
    for name, call in (("sandbox_run run_python('pass')", lambda **k: run_python("pass", **k)),
                       ("sandbox_tests verify(code, 1 assert)", lambda **k: verify("code", sol, tests, **k))):
        ours = _per_call(lambda: call(), n)
        os.environ["OPENS1_BWRAP"] = ""  # the opt-in mode without bubblewrap
        try:
            unisolated = _per_call(lambda: call(allow_unisolated=True), n)
        finally:
            del os.environ["OPENS1_BWRAP"]
        out.append({"row": name, "input": mode, "ours_s": ours, "ref_s": bare,
                    "note": f"median of {n}; unisolated mode {unisolated:.3f} s"})
    return out


ROWS: dict[str, Callable] = {"pdf_abandon": row_pdf_abandon, "sandbox": row_sandbox}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated row-name prefixes")
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats, no full-parse reference")
    args = ap.parse_args(argv)
    prefixes = [p for p in args.only.split(",") if p]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (timings on a shared machine are noisy)")
    print(f"{'row':44} {'input':22} {'ours s':>9} {'ref s':>9} {'ref/ours':>9}  note")
    for name, fn in ROWS.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        for r in fn(args):
            ratio = r["ref_s"] / r["ours_s"] if r.get("ref_s") and r.get("ours_s") else None
            print(f"{r['row']:44} {r['input']:22} {_fmt(r['ours_s']):>9} {_fmt(r['ref_s']):>9} "
                  f"{_fmt(ratio):>9}  {r.get('note', '')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
