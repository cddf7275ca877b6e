"""Model -> checkpoint directory: sharded safetensors + index + config.json in a writable
layout (interns1, OpenS1's own, or internvl for transformers' InternVL), and `opens1 model
export`, which rewrites a checkpoint directory (weights, configs, tokenizer) for other tools."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import torch

from opens1.common.atomic import atomic_write
from opens1.config import S1Config
from opens1.models.checkpoint.configs import GENERATION_CONFIG
from opens1.models.checkpoint.files import write_json, write_shards
from opens1.models.checkpoint.layout import Layout
from opens1.models.checkpoint.load import load_model
from opens1.models.checkpoint.registry import LAYOUTS, writable_layout
from opens1.tokenizer import load_tokenizer


def _export_tensors(model, layout: Layout, dropped: list[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (checkpoint key, tensor) in our module order; names the layout cannot hold are
    appended to `dropped` instead (see Layout.drop)."""
    cfg = model.config
    for name, t in model.state_dict().items():
        if cfg.text.tie_word_embeddings and name == "lm_head.weight":
            continue  # tied: written once, as the embedding
        if any(re.match(p, name) for p in layout.drop):
            if dropped is not None:
                dropped.append(name)
            continue
        for key, x in layout.export_items(name, t.detach(), cfg):
            yield key, x.contiguous()


def export_state_dict(model, layout: str = "interns1") -> dict[str, torch.Tensor]:
    """Our model -> a state dict with the layout's checkpoint names (HF q/k/v, per-expert keys)."""
    return dict(_export_tensors(model, LAYOUTS[layout]))


def hf_config(model_cfg: S1Config, dtype: torch.dtype, layout: str = "interns1") -> dict:
    """The config.json we write, with our own S1Config under "opens1_config" for an exact
    round trip: Intern-S1's InternS1Config ("interns1") or transformers' InternVLConfig
    ("internvl", which has no time-series tower)."""
    return writable_layout(layout).write_config(model_cfg, dtype)


def save_model(model, path, *, max_shard_size: int | str = "4GB", layout: str = "interns1") -> list[str]:
    """Write sharded safetensors (model-0000i-of-0000n.safetensors) + index + config.json in
    `layout` (interns1 or internvl). Returns the parameters the layout cannot hold (left out)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lay = writable_layout(layout)
    conf = lay.write_config(model.config, model.dtype)  # before writing: refuses what the layout cannot hold
    dropped: list[str] = []
    write_shards(path, _export_tensors(model, lay, dropped), max_shard_size)
    write_json(path / "config.json", conf)
    return dropped


def _source_dtype(path: Path) -> torch.dtype:
    raw = json.loads((path / "config.json").read_text())
    name = raw.get("dtype") or raw.get("torch_dtype") or (raw.get("text_config") or {}).get("dtype") or "float32"
    return getattr(torch, str(name).removeprefix("torch."), torch.float32)


def export_checkpoint(src, out, *, layout: str = "internvl", dtype=None, max_shard_size: int | str = "4GB") -> dict:
    """Rewrite a checkpoint directory for other tools (`opens1 model export`).

    layout "internvl": transformers' InternVLForConditionalGeneration (config, weight names,
    preprocessor/processor configs); "interns1": Intern-S1's own layout. The tokenizer found
    in `src` (OpenS1's or an Intern-S1 directory) is written as a directory that
    AutoTokenizer.from_pretrained(out, trust_remote_code=True) loads (needs transformers here;
    without it OpenS1's own tokenizer files are written). generation_config.json is copied.
    dtype None keeps the checkpoint's. Returns {"left_out": {reason: [names]}, "tokenizer": kind}."""
    src, out = Path(src), Path(out)
    lay = writable_layout(layout)
    model = load_model(src, dtype=dtype or _source_dtype(src), device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    dropped = save_model(model, out, max_shard_size=max_shard_size, layout=layout)
    left_out: dict[str, list[str]] = {}
    for name in dropped:
        reason = next(why for pat, why in lay.drop.items() if re.match(pat, name))
        left_out.setdefault(reason, []).append(name)
    for fname, data in (lay.extra_files(model.config) if lay.extra_files else {}).items():
        write_json(out / fname, data)
    gen = src / GENERATION_CONFIG
    if gen.is_file():
        atomic_write(out / GENERATION_CONFIG, gen.read_bytes())
    return {"left_out": left_out, "tokenizer": _export_tokenizer(src, out, model.config)}


def _export_tokenizer(src: Path, out: Path, cfg: S1Config) -> str:
    try:
        tok = load_tokenizer(src)
    except (FileNotFoundError, ValueError):
        return "none (the source has no tokenizer)"
    if cfg.vision is not None and tok.special_tokens.get("<IMG_CONTEXT>") != cfg.image_token_id:
        raise ValueError(f"the tokenizer's <IMG_CONTEXT> is {tok.special_tokens.get('<IMG_CONTEXT>')} but the "
                         f"model's image_token_id is {cfg.image_token_id}")
    try:
        from opens1.tokenizer.hf import export_hf_tokenizer  # optional: transformers
    except ImportError:
        tok.save_pretrained(out)
        return "opens1 files only (install transformers for an AutoTokenizer directory)"
    export_hf_tokenizer(tok, out)
    return "AutoTokenizer (trust_remote_code)"
