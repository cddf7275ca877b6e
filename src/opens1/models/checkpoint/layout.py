"""What a checkpoint layout is: key renames between the checkpoint's names and our module
names, the tensor transforms that split or stack tensors on the way (fused qkv, stacked
experts), the parser of its config.json and, for layouts we can write, its config writer.
One module per layout (qwen3.py, interns1.py, internvl.py, internvl_chat.py) builds its
Layout; registry.py collects them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from opens1.config import S1Config

# HF checkpoints of older transformers carry the rotary inverse frequencies; we recompute them
ROTARY_IGNORE = [r"(^|\.)rotary_emb\.inv_freq$"]


@dataclass
class Piece:
    """Copy source[src_index] into param `dest`[dest_index] (None = the whole tensor)."""

    dest: str
    dest_index: tuple | None = None
    src_index: tuple | None = None


# (regex on our renamed key, fn(match, cfg) -> pieces)
Transform = tuple[str, Callable[[re.Match, S1Config], list[Piece]]]
# (regex on our name, fn(name, tensor, cfg) -> [(our-style name, tensor)]), used when saving
ExportTransform = tuple[str, Callable[[str, torch.Tensor, S1Config], list[tuple[str, torch.Tensor]]]]


@dataclass
class Layout:
    """One checkpoint layout. Rename rules are tried in order and the first match wins; a
    key no rule matches is 'unexpected'. `transforms` are tried in order too; a name none
    matches is copied whole."""

    name: str
    model_types: tuple[str, ...]  # config.json model_type values read with this layout
    parse: Callable[[dict], S1Config]  # config.json dict -> S1Config
    renames: list[tuple[str, str]]  # (regex on checkpoint key, replacement) -> our name
    transforms: list[Transform] = field(default_factory=list)
    export: list[tuple[str, str]] = field(default_factory=list)  # (regex on our name, replacement)
    export_transforms: list[ExportTransform] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)  # checkpoint keys to skip silently (regexes)
    drop: dict[str, str] = field(default_factory=dict)  # regex on our names not written -> why
    # completes the config from files beside config.json: (S1Config, config dict, directory)
    post_parse: Callable[[S1Config, dict, Path], None] | None = None
    # writable layouts: (S1Config, dtype) -> the config.json dict we write
    write_config: Callable[[S1Config, torch.dtype], dict] | None = None
    # extra JSON files written beside the weights: S1Config -> {file name: dict}
    extra_files: Callable[[S1Config], dict[str, dict]] | None = None

    def to_ours(self, key: str) -> str | None:
        for pat, rep in self.renames:
            new, n = re.subn(pat, rep, key, count=1)
            if n:
                return new
        return None

    def to_ckpt(self, name: str) -> str:
        for pat, rep in self.export:
            new, n = re.subn(pat, rep, name, count=1)
            if n:
                return new
        raise ValueError(f"layout {self.name!r} has no export rule for parameter {name!r}")

    def pieces(self, name: str, cfg: S1Config) -> list[Piece]:
        """Where the checkpoint tensor that maps to our `name` goes."""
        for pat, fn in self.transforms:
            m = re.match(pat, name)
            if m:
                return fn(m, cfg)
        return [Piece(name)]

    def export_items(self, name: str, t: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
        """Our parameter -> [(checkpoint key, tensor)] in this layout."""
        items = [(name, t)]
        for pat, fn in self.export_transforms:
            if re.match(pat, name):
                items = fn(name, t, cfg)
                break
        return [(self.to_ckpt(n), x) for n, x in items]
