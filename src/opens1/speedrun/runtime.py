"""The process a speedrun lives in: when it started, how many threads it uses, which revision
it runs, and its log lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 where unavailable), so that the
    command line's budget includes interpreter start-up and imports."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return 0.0


def pick_threads(trials: int = 3, seconds: float = 0.15) -> tuple[int, float]:
    """(torch threads, measured speed-up of all cores over one) for this machine now. On a
    2-core machine that another process keeps busy, 2 threads made SFT 10x slower than 1
    (692 vs 6,457 tokens/s, measured): threads that wait for a busy core stall every op.
    So the model's typical matmuls are timed with 1 thread and with all cores, best of
    `trials` each, and all cores are used only where they are at least 1.3x faster."""
    cores = os.cpu_count() or 1
    if cores == 1:
        return 1, 1.0
    a, b, c = torch.randn(2048, 128), torch.randn(128, 384), torch.randn(2048, 384)  # [tokens, hidden] x MLP

    def rate(n: int) -> float:
        torch.set_num_threads(n)
        a @ b
        k, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            a @ b
            c @ b.T
            k += 1
        return k / (time.perf_counter() - t)

    one = many = 0.0
    for _ in range(trials):
        one, many = max(one, rate(1)), max(many, rate(cores))
    ratio = many / max(one, 1e-9)
    n = cores if ratio >= 1.3 else 1
    torch.set_num_threads(n)
    return n, ratio


def set_threads(threads: int) -> str:
    """Sets torch's thread count (`threads`, or 0: measured by pick_threads); returns how it was chosen."""
    if threads:
        torch.set_num_threads(threads)
        return "set by --threads"
    _, ratio = pick_threads()
    return f"chosen by a start-up benchmark: {os.cpu_count()} threads ran {ratio:.2f}x as fast as 1"


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def log(msg: str) -> None:
    print(f"[speedrun] {msg}", file=sys.stderr, flush=True)


def duration(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
