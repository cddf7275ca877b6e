"""The safetensors files of a checkpoint directory: one model.safetensors, or shards named by
model.safetensors.index.json. Reading is lazy (headers first, tensors one at a time); writing
is sharded and atomic (opens1/common/atomic.py: ordinary 0644-style permissions). Pickled weights are never read.

A checkpoint is untrusted input: the shard index may only name files inside the model
directory (relative paths without `..`; symlinks inside it, as the HF cache makes, are
followed)."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

import torch

from opens1.common.atomic import atomic_write

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class TensorSource:
    """All tensors of a checkpoint directory, read lazily: `meta` holds every key's
    (shape, safetensors dtype) from the headers; `get(key)` reads one tensor."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._open = safe_open
        index, single = path / INDEX_NAME, path / SINGLE_NAME
        if index.is_file():
            files = sorted(set(index_shards(index)))
        elif single.is_file():
            files = [SINGLE_NAME]
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
        if not files:
            pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
            hint = f" (found {pickled}: pickled weights are never loaded; convert them to safetensors)" if pickled else ""
            raise FileNotFoundError(f"no *.safetensors weights in {path}{hint}")
        self.path, self.files = path, files
        self._handles: dict[str, object] = {}
        self.file_of: dict[str, str] = {}
        self.meta: dict[str, tuple[tuple[int, ...], str]] = {}  # key -> (shape, safetensors dtype)
        for f in files:
            if not (path / f).is_file():
                raise FileNotFoundError(f"shard {f} named in {INDEX_NAME} is missing from {path}")
            h = self._handle(f)
            for k in h.keys():
                s = h.get_slice(k)
                self.file_of[k] = f
                self.meta[k] = (tuple(s.get_shape()), s.get_dtype())

    def _handle(self, f: str):
        if f not in self._handles:  # f: a name checked by index_shards, or one found by glob
            self._handles[f] = self._open(str(self.path / f), framework="pt", device="cpu")
        return self._handles[f]

    def get(self, key: str) -> torch.Tensor:
        return self._handle(self.file_of[key]).get_tensor(key)


def index_shards(index: Path) -> list[str]:
    """The shard file names of a safetensors index, each a relative path inside the model
    directory: an absolute path, `..`, or anything but a string is a ValueError."""
    try:
        wm = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index} is not a safetensors index with a weight_map: {e}") from None
    if not isinstance(wm, dict):
        raise ValueError(f"{index}: weight_map must map tensor names to shard files")
    for key, name in wm.items():
        inside = (isinstance(name, str) and name and "\\" not in name and "\0" not in name
                  and not PurePosixPath(name).is_absolute() and not PureWindowsPath(name).drive
                  and ".." not in PurePosixPath(name).parts)
        if not inside:
            raise ValueError(
                f"{index}: tensor {key!r} is in shard {name!r}, which is not a file inside the model directory; "
                "shard names must be relative paths without '..'"
            )
    return list(wm.values())


def parse_size(s: int | str) -> int:
    """'4GB', '500MB', '1.5G' or a byte count -> bytes."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", s.upper())
    if not m:
        raise ValueError(f"bad shard size {s!r} (use e.g. '4GB', '500MB' or bytes)")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)])


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2))


def write_shards(path: Path, tensors: Iterable[tuple[str, torch.Tensor]], max_shard_size: int | str) -> None:
    """(key, tensor) pairs -> model-0000i-of-0000n.safetensors shards of at most
    `max_shard_size` bytes (a bigger tensor gets a shard of its own) and their index. Shards
    of an earlier, bigger save and a stale single-file checkpoint are removed."""
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in tensors:
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = t.cpu()
        size += nbytes
    n = len(shards)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        atomic_write(path / fname, write=lambda tmp, s=shard: save_file(s, tmp, metadata={"format": "pt"}))
        for k, t in shard.items():
            weight_map[k] = fname
            total += t.numel() * t.element_size()
    write_json(path / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
    for old in path.glob("model*.safetensors"):
        if old.name not in weight_map.values():
            old.unlink()
