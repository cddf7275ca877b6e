"""Executors for the corpus pipeline (pipeline.py): anything with `map(fn, items)`.
`LocalExecutor` runs a multiprocessing Pool (or inline with 1 worker), `RayExecutor`
makes each item a Ray task."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable

from opens1.common.progress import progress


class LocalExecutor:
    """multiprocessing.Pool over the host's cores; workers=1 runs inline (debuggable, no fork)."""

    def __init__(self, workers: int | None = None, quiet: bool = True):
        self.workers = workers or os.cpu_count() or 1
        self.quiet = quiet  # False: a progress bar per phase (on a terminal)

    def map(self, fn: Callable, items: list) -> list:
        desc = {"run_phase_a": "build A (filter)", "run_phase_c": "build C (write)"}.get(fn.__name__, fn.__name__)
        with progress(len(items), desc, quiet=self.quiet, unit="shard") as bar:
            if self.workers <= 1 or len(items) <= 1:
                out = []
                for x in items:
                    out.append(fn(x))
                    bar.update(1)
                return out
            with mp.get_context("fork").Pool(min(self.workers, len(items))) as pool:
                out = []
                for r in pool.imap(fn, items, chunksize=1):  # in order, like map
                    out.append(r)
                    bar.update(1)
                return out


class RayExecutor:
    """Each item becomes a Ray task. `address` joins a cluster ("auto" or ray://...); without it a
    local instance starts (num_cpus caps it). Install with `pip install opens1[ray]`."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError as e:
            raise ImportError("the Ray executor needs `pip install ray==2.60.0` (opens1[ray])") from e
        self.ray = ray
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
            ray.init(ignore_reinit_error=True, log_to_driver=False, **kw)

    def map(self, fn: Callable, items: list) -> list:
        remote = self.ray.remote(fn)
        return self.ray.get([remote.remote(x) for x in items])
