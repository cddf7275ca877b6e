"""Stable digests: the same input gives the same hex string in every process and on every
machine (unlike Python's `hash`), so they can name files and fingerprint configurations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def text_digest(text: str, *, length: int | None = None, algorithm: str = "sha1") -> str:
    """Hex digest of UTF-8 `text`, cut to `length` characters when given."""
    return hashlib.new(algorithm, text.encode("utf-8")).hexdigest()[:length]


def json_digest(obj, *, length: int | None = None, algorithm: str = "sha1") -> str:
    """Digest of `obj` as canonical JSON (sorted keys): equal dicts give equal digests."""
    return text_digest(json.dumps(obj, sort_keys=True), length=length, algorithm=algorithm)


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks (checkpoint shards are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
