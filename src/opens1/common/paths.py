"""Where the real data lives.

OpenS1 ships a compact, permissively licensed subset of real data inside the
package (`opens1/data/embedded/`, see its README.md) laid out exactly like the
full collection in `../shared/data`. Every reader takes a data root, so
`--data ../shared/data` (or any folder in the same layout) runs bigger.

Files may be stored plain or compressed: `open_data(root, "qa/gsm8k_test.jsonl")`
finds `qa/gsm8k_test.jsonl`, `.gz` or `.xz`, whichever exists.
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path
from typing import IO, Iterable, Iterator

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "embedded"
_SUFFIXES = ("", ".gz", ".xz")


def data_root(path: str | Path | None = None) -> Path:
    """The data root to read from: `path` if given (must exist), else the embedded subset."""
    if path is None:
        return EMBEDDED
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} is not a directory")
    return root


def find_data(root: str | Path | None, relpath: str) -> Path:
    """The file for `relpath` under `root`, plain or compressed; a clear error if none."""
    base = data_root(root)
    rel = relpath
    for ext in (".gz", ".xz"):
        if rel.endswith(ext):
            rel = rel[: -len(ext)]
    for ext in _SUFFIXES:
        cand = base / (rel + ext)
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no {relpath!r} (plain, .gz or .xz) under data root {str(base)!r}")


def has_data(root: str | Path | None, relpath: str) -> bool:
    try:
        find_data(root, relpath)
        return True
    except FileNotFoundError:
        return False


def open_data(root: str | Path | None, relpath: str, mode: str = "rt") -> IO:
    """Open a data file for reading, decompressing .gz/.xz transparently."""
    path = find_data(root, relpath)
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8" if "t" in mode else None)
    if path.suffix == ".xz":
        return lzma.open(path, mode, encoding="utf-8" if "t" in mode else None)
    return open(path, mode, encoding="utf-8" if "t" in mode else None)


def read_fasta(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(header, sequence) pairs of a FASTA stream; line-wrapped sequences are joined."""
    header, seq = None, []
    for line in lines:
        line = line.strip()
        if line.startswith(">"):
            if header is not None:
                yield header, "".join(seq)
            header, seq = line[1:], []
        elif line:
            seq.append(line)
    if header is not None:
        yield header, "".join(seq)
