"""Supervised worker processes for `opens1 data parse-pdf`. Documents run in worker
processes (one document at a time each) that the parent supervises: it kills a worker whose
document runs past --doc-timeout (the parser cannot swallow that: the clock is outside it),
records a worker that dies (as by the OOM killer) against its document only, and starts a
fresh worker in either case. Each document may grow its worker's address space by
--doc-memory MiB (RLIMIT_AS: a larger allocation fails with MemoryError)."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import time
from collections import deque
from multiprocessing.connection import wait as wait_ready

from opens1.corpus.pdf.markers import error_record, process_one
from opens1.corpus.pdf.parse import ParseConfig


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
            return error_record(path, stem, f"worker died ({_signal_name(w.proc.exitcode)}) while parsing this "
                                      "document, e.g. the OOM killer or a native crash"), True
    elif cfg.doc_timeout > 0 and time.monotonic() - w.started >= cfg.doc_timeout:
        # enforced from outside: the parser's own `except Exception` cannot swallow a kill
        return error_record(path, stem, f"DocumentTimeout: document took longer than --doc-timeout "
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
