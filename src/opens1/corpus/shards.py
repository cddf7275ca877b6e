"""Input planning for the corpus pipeline (pipeline.py): input files cut into shards (row
ranges), and the rows of one shard read back. A bad row (not JSON, not UTF-8, no string
`text`) becomes an error record naming its file and line and the run goes on; a truncated
or corrupt .gz ends that file at the last line it could read, with one error record.
Plain JSONL shards seek to a byte offset found while planning; gzipped JSONL is re-read
from the top per shard and Parquet read whole per shard."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse


@dataclass(frozen=True)
class Shard:
    index: int
    path: str
    start: int  # first row (inclusive) of the input file
    stop: int  # last row (exclusive)
    offset: int = -1  # byte offset of row `start` in a plain JSONL file (seekable), else -1
    line: int = 1  # line number (1-based) at `offset`

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.parquet"


def _error(path: str, line: int | None, row: int | None, message: str) -> dict:
    where = f"{path}:{line}" if line is not None else f"{path} row {row}"
    return {"file": str(path), "line": line, "row": row, "where": where, "error": message[:500]}


def _jsonl_lines(path: str, offset: int = -1, line: int = 1, errors: list | None = None):
    """(line number, bytes) of each non-empty line of a JSONL(.gz) file, from byte `offset`
    of a plain file. A gzip stream that breaks ends the iteration with one error record."""
    gz = Path(path).suffix == ".gz"
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        if offset > 0:
            f.seek(offset)
        lines = iter(f)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                if errors is not None:
                    errors.append(_error(path, line, None, f"truncated or corrupt gzip, read up to here "
                                                           f"({type(e).__name__}: {e})"))
                return
            if raw.strip():
                yield line, raw
            line += 1


def _row_offsets(path: str, shard_size: int) -> tuple[int, list[tuple[int, int]]]:
    """(rows, (byte offset, line number) of every shard_size-th row) of a plain JSONL file,
    in one binary pass."""
    n, offsets, pos = 0, [], 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                if n % shard_size == 0:
                    offsets.append((pos, lineno))
                n += 1
            pos += len(line)
    return n, offsets


def plan_shards(inputs: Sequence[str], shard_size: int, errors: list | None = None) -> list[Shard]:
    """Deterministic row-range shards over the inputs (same inputs -> same shards on a rerun).
    Plain JSONL shards carry a byte offset so each worker seeks to its rows; compressed JSONL is
    re-read from the top per shard, Parquet is read whole (split big inputs into several files).
    A .gz that breaks counts the rows before the break (and adds an error record to `errors`)."""
    shards = []
    for path in inputs:
        p = Path(path)
        offsets: list[tuple[int, int]] = []
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            n = pq.ParquetFile(p).metadata.num_rows
        elif p.suffix == ".gz":
            n = sum(1 for _ in _jsonl_lines(str(p), errors=errors))
        else:
            n, offsets = _row_offsets(str(p), shard_size)
        for k, start in enumerate(range(0, n, shard_size)):
            off, line = offsets[k] if offsets else (-1, 1)
            shards.append(Shard(len(shards), str(path), start, min(start + shard_size, n), off, line))
    return shards


def _parse_row(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise ValueError(f"every document needs a string 'text' field, got {text.strip()[:80]!r}")
    return row


def _shard_rows(shard: Shard, errors: list):
    """(row index, document) for the shard's rows; bad rows become records in `errors`."""
    if Path(shard.path).suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(shard.path).to_pylist()[shard.start:shard.stop], shard.start):
            if isinstance(row.get("text"), str):
                yield i, row
            else:
                errors.append(_error(shard.path, None, i, "every document needs a string 'text' field"))
        return
    i = 0 if shard.offset < 0 else shard.start
    if i >= shard.stop:
        return
    for line, raw in _jsonl_lines(shard.path, shard.offset, shard.line if shard.offset >= 0 else 1, errors):
        if i >= shard.start:
            try:
                yield i, _parse_row(raw)
            except ValueError as e:
                errors.append(_error(shard.path, line, i, str(e)))
        i += 1
        if i >= shard.stop:  # stop before reading on: the rows after belong to the next shard
            return


def read_shard(shard: Shard, errors: list | None = None) -> list[dict]:
    """The shard's documents with `id` and `source` filled in; bad rows are skipped and
    recorded in `errors` (when given)."""
    docs = []
    stem = Path(shard.path).name.split(".")[0]
    for i, d in _shard_rows(shard, errors if errors is not None else []):
        d = dict(d)
        d["id"] = str(d.get("id") or f"{stem}:{i}")
        src = d.get("source") or (urlparse(d["url"]).netloc if d.get("url") else "") or stem
        d["source"] = str(src)
        docs.append(d)
    return docs
