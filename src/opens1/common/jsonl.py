"""JSONL documents: read rows with a `text` field from JSONL (.jsonl, .jsonl.gz) or
Parquet, and write JSONL atomically (a file at the path is always complete)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Iterator

from opens1.common.atomic import atomic_write


def check_document(row, path: str | Path) -> dict:
    """`row` itself when it is a dict with a string `text`, else ValueError naming `path`."""
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise ValueError(f"{path}: every document needs a string 'text' field, got {str(row)[:80]!r}")
    return row


def read_documents(path: str | Path) -> Iterator[dict]:
    """Documents from JSONL (.jsonl, .jsonl.gz) or Parquet; each must have a `text` field."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no input file {str(p)!r}")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional: pyarrow

        for row in pq.read_table(p).to_pylist():
            yield check_document(row, p)
        return
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                try:
                    yield check_document(json.loads(line), p)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}:{i + 1}: not valid JSON ({e})") from None


def write_jsonl(path: str | Path, docs: Iterable[dict]) -> int:
    """Atomic JSONL write (temp file then os.replace); returns the number of documents."""
    n = 0

    def write(tmp: str) -> None:
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
                n += 1

    atomic_write(path, write=write)
    return n
