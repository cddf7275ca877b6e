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
- server_*: `opens1 serve --model tiny --max-seq-len 4096` in a subprocess, from this tree
  (ours) and from `git archive --baseline-rev src` (ref; default c6afc60, the last
  revision without the server defences; `--baseline-rev none` skips it). During each heavy
  request the row polls /health every 20 ms and keeps one streamed chat running: ours_s
  and ref_s are the worst /health latency; the note gives the heavy request's status and
  time, the stream's longest pause between chunks, and how much the server process (and
  its workers) grew. Heavy requests: one 84 KB message of `[C@@H]` (over the character
  budget), one 60 KB (within it: tokenized in a worker), 14 blank PNGs just under the
  per-image limit, a 1500 x 1500 series (over the values budget), a 1000 x 1000 one (at
  it), and six concurrent 1000-atom molecule drawings.
- tokenizer_per_char: microseconds per character of `tokenizer.encode` on `[C@@H]`
  repeated and on MATH-500 problems (prose with LaTeX), at 10k and 160k characters (this tree's tokenizer; the
  SMILES check is super-linear until the tokenizer's linear-time rewrite).
Rows register in ROWS (name -> function returning dicts). Timings on a shared machine
are noisy: the load average is printed.

    python bench/attacks.py --only server,tokenizer    # the server rows and the tokenizer row
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
    from opens1.corpus.pdf.parse import ParseConfig
    from opens1.corpus.pdf.run import run

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


# ------------------------------------------------------------------------------ server rows


def _png_data_url(side: int) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")  # blank bilevel: ~40 KB for 40 M pixels
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _heavy_requests(quick: bool) -> list[tuple[str, str, Callable]]:
    """(row name, input description, fn(url) -> (status codes, seconds))."""
    import json

    import httpx

    def chat(content) -> dict:
        return {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": content}]}

    def post(body):
        # encoded now: serializing millions of floats during the measurement would hold this
        # process's GIL and show up as pauses of the stream and /health clients
        raw = json.dumps(body).encode()

        def fn(url):
            t0 = time.perf_counter()
            r = httpx.post(url + "/v1/chat/completions", content=raw, timeout=600,
                           headers={"content-type": "application/json"})
            return [r.status_code], time.perf_counter() - t0
        return fn

    def molecules(url):
        import concurrent.futures

        t0 = time.perf_counter()
        get = lambda _: httpx.get(url + "/v1/opens1/molecule", params={"smiles": "C" * 1000}, timeout=600).status_code
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            codes = list(ex.map(get, range(6)))
        return codes, time.perf_counter() - t0

    side = 6323  # 6323^2 = 39.98 M pixels, just under the 40 M per-image limit
    series = lambda t, c: [{"type": "time_series", "time_series": {"values": [[0.5 + (i % 7) * 0.1] * c for i in range(t)],
                                                                   "sampling_rate": 100}}]
    reps = 4 if quick else 14
    return [
        ("server_smiles_84k", "[C@@H] x 14000", post(chat("[C@@H]" * 14_000))),
        ("server_smiles_60k", "[C@@H] x 10000", post(chat("[C@@H]" * 10_000))),
        ("server_png_set", f"{reps} PNGs {side}^2", post(chat([{"type": "image_url", "image_url": {"url": _png_data_url(side)}}] * reps))),
        ("server_series_1500x1500", "2.25 M values", post(chat(series(1500, 1500)))),
        ("server_series_1000x1000", "1 M values", post(chat(series(1000, 1000)))),
        ("server_molecules", "6 x 1000 atoms", molecules),
    ]


def _tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of pid, RSS of all its descendants) in bytes, from /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    parent, rss = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            rss[int(d.name)] = int((d / "statm").read_text().split()[1]) * page
        except OSError:
            continue
        parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    kids, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - kids
        kids |= frontier
    return rss.get(pid, 0), sum(rss.get(k, 0) for k in kids)


class _Server:
    """`opens1 serve --model tiny` from `src` in a subprocess."""

    def __init__(self, src: Path):
        import subprocess

        import httpx

        from opens1.serve.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opens1", "serve", "--model", "tiny", "--port", str(self.port),
             "--max-seq-len", "4096", "--max-batch-size", "4", "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            self.close()
            raise RuntimeError(f"the server from {src} did not start")
        # one ordinary request, so that workers and lazy imports are warm before measuring
        httpx.post(self.url + "/v1/chat/completions", timeout=180,
                   json={"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except Exception:
            self.proc.kill()


def _measure(server: _Server, fn: Callable) -> dict:
    """Run fn(url) while polling /health and streaming one chat: the worst /health latency,
    the stream's longest pause, fn's statuses and time, the server's growth."""
    import threading

    import httpx

    stop, health, chunks = threading.Event(), [], []

    def poll():
        with httpx.Client(timeout=600) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get(server.url + "/health")
                health.append(time.perf_counter() - t0)
                stop.wait(0.02)

    def stream():
        body = {"model": "tiny", "max_tokens": 4000, "ignore_eos": True, "stream": True,
                "chat_template_kwargs": {"enable_thinking": False}, "messages": [{"role": "user", "content": "go"}]}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=600) as r:
            for _ in r.iter_lines():
                chunks.append(time.perf_counter())
                if stop.is_set():
                    return

    threads = [threading.Thread(target=poll, daemon=True), threading.Thread(target=stream, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    rss0 = _tree_rss(server.proc.pid)
    t0 = time.perf_counter()
    codes, took = fn(server.url)
    t1 = time.perf_counter()
    rss1 = _tree_rss(server.proc.pid)
    stop.set()
    for t in threads:
        t.join(600)
    during = [b - a for a, b in zip(chunks, chunks[1:]) if b >= t0 and a <= t1]
    return {"health": max(health) if health else None, "codes": codes, "took": took,
            "gap": max(during) if during else None, "grew": (rss1[0] - rss0[0], rss1[1] - rss0[1])}


def _baseline_src(rev: str, tmp: str) -> Path:
    import subprocess

    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
    return Path(tmp, "src")


def row_server(args) -> list[dict]:
    heavy = _heavy_requests(args.quick)
    results = {}
    with tempfile.TemporaryDirectory(prefix="attacks_base_") as tmp:
        sides = [("ours", REPO / "src")]
        if args.baseline_rev.lower() != "none":
            sides.append(("ref", _baseline_src(args.baseline_rev, tmp)))
        for side, src in sides:
            server = _Server(src)
            try:
                for name, _, fn in heavy:
                    results[side, name] = _measure(server, fn)
            finally:
                server.close()
    rows = []
    mb = lambda b: f"{b / 2**20:+.0f} MB"
    for name, what, _ in heavy:
        ours, ref = results["ours", name], results.get(("ref", name))
        note = []
        for side, r in (("ours", ours), ("ref", ref)):
            if r is not None:
                gap = "-" if r["gap"] is None else f"{r['gap']:.2f} s"
                note.append(f"{side}: {','.join(map(str, sorted(set(r['codes']))))} in {r['took']:.2f} s, stream pause "
                            f"{gap}, server {mb(r['grew'][0])}, workers {mb(r['grew'][1])}")
        rows.append({"row": name, "input": what, "ours_s": ours["health"], "ref_s": ref and ref["health"],
                     "note": "; ".join(note)})
    return rows


def row_tokenizer(args) -> list[dict]:
    from opens1 import load_tokenizer

    import json

    from opens1.common.paths import open_data

    tok = load_tokenizer(None)
    with open_data(None, "qa/math500_test.jsonl") as f:  # MATH-500 problems: prose with LaTeX
        prose = "\n\n".join(json.loads(line)["problem"] for line in f)
    rows = []
    for kind, unit in (("[C@@H]", "[C@@H]"), ("MATH-500 prose", prose)):
        for n in (10_000, 40_000 if args.quick else 160_000):
            text = (unit * (n // len(unit) + 1))[:n]
            t0 = time.perf_counter()
            tok.encode(text)
            dt = time.perf_counter() - t0
            rows.append({"row": f"tokenizer_per_char {kind}", "input": f"{n:,} chars", "ours_s": dt, "ref_s": None,
                         "note": f"{dt / n * 1e6:.2f} us/char"})
    return rows


ROWS: dict[str, Callable] = {"pdf_abandon": row_pdf_abandon, "sandbox": row_sandbox, "server": row_server,
                             "tokenizer": row_tokenizer}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated row-name prefixes")
    ap.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats, no full-parse reference")
    ap.add_argument("--baseline-rev", default="c6afc60",
                    help="git revision whose src/ serves the server rows' reference ('none': skip it)")
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
