"""Atomic file writes with ordinary permissions: one helper for the files OpenS1 writes whole
(config.json, weights, eval results). The tokenizer keeps its own copy in tokenizer/atomic.py
(0644 likewise), because that file is exported standalone beside Hugging Face tokenizers.

    atomic_write(path, "text")                      # str or bytes
    atomic_write(path, write=lambda tmp: save_file(tensors, tmp))

The data goes to a temporary file beside `path`, which then replaces `path` with
os.replace, so a reader sees the old file or the new one, never half of one. The
temporary file comes from tempfile.mkstemp, which creates it 0600; it is given the mode a
plain open() would have given (0666 minus the umask, usually 0644) before it is renamed,
so checkpoints and results can be shared like any other file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: swap and restore
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: str | bytes | None = None, *,
                 write: Callable[[str], None] | None = None, mode: int | None = None) -> Path:
    """Write `data` (or call `write(tmp_path)`) to a temp file, then rename it onto `path`.
    `mode` defaults to 0666 & ~umask. Returns the path."""
    if (data is None) == (write is None):
        raise TypeError("give exactly one of data or write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if data is not None:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        else:
            os.close(fd)
            write(tmp)
        os.chmod(tmp, 0o666 & ~umask() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
