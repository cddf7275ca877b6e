"""CPU-heavy request work (tokenization, image decoding and tiling, RDKit drawing) away
from the event loop, in a small pool of worker processes.

    workers = Workers("render", processes=2, context=processor)
    result = await workers.run(render_chat, messages, tools, thinking=True)  # render_chat(processor, ...)

Design choices:
- Processes, not threads: the tokenizer's RDKit check and RDKit's drawing hold the GIL
  for their whole C call (a 84 KB SMILES-like message: 7 s), so a thread would stall the
  event loop as surely as running inline. A worker process cannot: /health, streaming and
  every other request keep their share of the server while a heavy request is prepared.
- The pool is spawned, not forked: the server has an engine thread and torch's thread
  pools, which a forked child could inherit mid-lock. Each worker gets the pool's
  `context` (the Processor: tokenizer + config, 0.5 MB pickled) once, at start, and
  results come back as numpy arrays (tensors would go through torch's shared-memory
  reductions, which depend on /dev/shm's size).
- Bounded: at most `max_pending` jobs queued or running (more: HTTP 429). A worker that
  dies (killed, out of memory) fails the jobs it had and the pool is rebuilt; nothing
  else in the server is affected.
- `processes=0` runs the jobs in threads of this process (for embedding and tests that
  patch the processor in place); the same functions, the same bounds.
- After each job a worker hands freed heap back to the OS (glibc `malloc_trim`), so one
  large but allowed image does not leave the worker hundreds of MB larger for good.
- A worker exits when the server process is gone (checked every second): a server
  killed without shutting its pools down (SIGKILL, or SIGTERM, which uvicorn re-raises
  after its graceful exit) leaves no orphans holding memory or its output pipes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

log = logging.getLogger("opens1.serve")


class Busy(RuntimeError):
    """Too many jobs queued: retry later (HTTP 429)."""


class WorkerDied(RuntimeError):
    """The worker running a job died; the pool has been rebuilt (HTTP 500)."""


# ------------------------------------------------------------------ inside a worker process

_CONTEXT: Any = None
_TRIM: Callable[[int], int] | None = None


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(context: Any) -> None:
    global _CONTEXT, _TRIM
    _CONTEXT = context
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="opens1-parent-watch", daemon=True).start()
    # a worker is one core's worth of work; torch is only imported if the context needed it
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            _TRIM = ctypes.CDLL(libc).malloc_trim
        except (OSError, AttributeError):  # not glibc
            _TRIM = None


def _call_in_worker(fn: Callable, args: tuple, kwargs: dict) -> Any:
    try:
        return fn(_CONTEXT, *args, **kwargs)
    finally:
        if _TRIM is not None:
            _TRIM(0)


def _ready() -> bool:
    return True


# ------------------------------------------------------------------ in the server


class Workers:
    """A bounded pool running `fn(context, *args, **kwargs)` for module-level functions `fn`."""

    def __init__(self, name: str, *, processes: int = 2, context: Any = None, max_pending: int = 64):
        if processes < 0 or max_pending < 1:
            raise ValueError(f"need processes >= 0 and max_pending >= 1, got {processes}, {max_pending}")
        self.name, self.processes, self.context, self.max_pending = name, processes, context, max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._executor: Executor | None = None

    def _pool(self) -> Executor:
        with self._lock:
            if self._executor is None:
                if self.processes == 0:
                    self._executor = ThreadPoolExecutor(4, thread_name_prefix=f"opens1-{self.name}")
                else:
                    self._executor = ProcessPoolExecutor(
                        self.processes, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_init_worker, initargs=(self.context,),
                    )
            return self._executor

    def start(self) -> None:
        """Start the workers now (spawning imports torch: seconds), not on the first request."""
        if self.processes:
            pool = self._pool()
            for _ in range(self.processes):
                pool.submit(_ready)

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        """fn(context, *args, **kwargs) in a worker. Raises Busy when max_pending jobs are in the pool,
        WorkerDied when the worker died under it; fn's own exceptions propagate."""
        if self._pending >= self.max_pending:
            raise Busy(f"the server is busy preparing {self._pending} requests ({self.name}); retry later")
        self._pending += 1
        pool = self._pool()
        try:
            if self.processes == 0:
                future = pool.submit(fn, self.context, *args, **kwargs)
            else:
                future = pool.submit(_call_in_worker, fn, args, kwargs)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._rebuild(pool)
            raise WorkerDied(f"a {self.name} worker died while preparing this request") from None
        finally:
            self._pending -= 1

    def _rebuild(self, broken: Executor) -> None:
        with self._lock:
            if self._executor is broken:
                log.error("a %s worker died; starting a new pool", self.name)
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._pending
