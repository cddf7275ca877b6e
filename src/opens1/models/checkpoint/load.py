"""Checkpoint directory -> model, lazily and shard by shard (memory stays near one model size):

  1. parse config.json into an S1Config with its layout's parser (registry.parse_config);
  2. build the model on the meta device (no memory);
  3. PLAN from the safetensors headers only: every checkpoint key is renamed by its layout's
     rules, then expanded by the layout's transforms into pieces (destination parameter,
     slice of it, slice of the source). Missing, unexpected and mis-shaped tensors are all
     collected and raised as ONE ValueError;
  4. allocate each parameter on the target device and copy the pieces in, tensor by tensor
     (FP8 block-quantised weights are dequantised on the way, fp8.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from opens1.config import S1Config
from opens1.models.checkpoint.files import TensorSource
from opens1.models.checkpoint.fp8 import FP8_DTYPES, dequantize_fp8, scale_key
from opens1.models.checkpoint.layout import Layout, Piece
from opens1.models.checkpoint.registry import LAYOUTS, parse_config
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.tokenizer import load_tokenizer


def _default_device_dtype(dtype, device):
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return dtype, device


def _target_tensors(model) -> dict[str, torch.Tensor]:
    """Parameters (tied ones once) and persistent buffers, by name."""
    out = dict(model.named_parameters())
    persistent = {k for k in model.state_dict()}
    out.update({k: b for k, b in model.named_buffers() if k in persistent})
    return out


def _problems(src: TensorSource, layout: Layout, missing, unexpected, misshaped) -> ValueError:
    def listing(title, items):
        if not items:
            return ""
        shown = "\n    ".join(items[:25]) + (f"\n    ... and {len(items) - 25} more" if len(items) > 25 else "")
        return f"\n  {title} ({len(items)}):\n    {shown}"

    return ValueError(
        f"checkpoint {src.path} does not match the model built from its config (layout {layout.name!r}):"
        + listing("missing from the checkpoint", missing)
        + listing("unexpected in the checkpoint", unexpected)
        + listing("wrong shape", misshaped))


def _plan(model, src: TensorSource, layout: Layout, cfg: S1Config) -> list[tuple[str, list[Piece]]]:
    """Map every checkpoint tensor onto our parameters using headers only.
    Returns [(ckpt key, [Piece])]; raises one ValueError listing every problem."""
    targets = _target_tensors(model)
    covered = {name: 0 for name in targets}
    plan, unexpected, misshaped = [], [], []
    scale_keys = {scale_key(src.meta, k) for k in src.meta} - {None}
    tied = cfg.text.tie_word_embeddings
    for key, (shape, _) in src.meta.items():
        if key in scale_keys or key.endswith(("input_scale", "activation_scale")):
            continue  # consumed with its weight (FP8)
        if any(re.search(p, key) for p in layout.ignore):
            continue
        name = layout.to_ours(key)
        if name == "lm_head.weight" and tied:
            continue  # tied head: the embedding is the head
        pieces = layout.pieces(name, cfg) if name is not None else []
        if not pieces or any(p.dest not in targets for p in pieces):
            unexpected.append(key)
            continue
        meta_src = torch.empty(shape, device="meta")
        for p in pieces:
            want = targets[p.dest] if p.dest_index is None else targets[p.dest][p.dest_index]
            have = meta_src if p.src_index is None else meta_src[p.src_index]
            if tuple(want.shape) != tuple(have.shape):
                misshaped.append(f"{key} {tuple(have.shape)} -> {p.dest} expects {tuple(want.shape)}")
            else:
                covered[p.dest] += want.numel()
        plan.append((key, pieces))
    missing = [f"{n} ({c}/{targets[n].numel()} elements)" if c else n
               for n, c in covered.items() if c != targets[n].numel()]
    if missing or unexpected or misshaped:
        raise _problems(src, layout, missing, unexpected, misshaped)
    return plan


def _materialise(model, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Replace meta parameters/buffers by uninitialised tensors on `device`, keeping ties.
    Persistent buffers are then loaded like parameters. The model holds no non-persistent
    buffers (rotary angles are computed in forward); one added later could not be loaded."""
    made: dict[int, torch.nn.Parameter] = {}
    for mname, mod in model.named_modules():
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            if id(p) not in made:
                dt = dtype if p.is_floating_point() else p.dtype
                made[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=dt, device=device), p.requires_grad)
            mod._parameters[pname] = made[id(p)]
        for bname, b in list(mod._buffers.items()):
            if b is None:
                continue
            if bname in mod._non_persistent_buffers_set:
                raise RuntimeError(f"non-persistent buffer {mname}.{bname} cannot be loaded from a checkpoint")
            dt = dtype if b.is_floating_point() else b.dtype
            mod._buffers[bname] = torch.empty(b.shape, dtype=dt, device=device)
    return _target_tensors(model)


def load_model(path, *, dtype=None, device=None):
    """Load an HF-format checkpoint directory (see this module's docstring) lazily and shard
    by shard. dtype None: float32 on CPU, bfloat16 on CUDA. Returns the model in eval mode."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    raw = json.loads(cfg_file.read_text())
    cfg, layout_name = parse_config(raw)
    layout = LAYOUTS[layout_name]
    if layout.post_parse is not None:
        layout.post_parse(cfg, raw, path)
    qcfg = raw.get("quantization_config") or (raw.get("text_config") or {}).get("quantization_config") or {}
    block = qcfg.get("weight_block_size")
    dtype, device = _default_device_dtype(dtype, device)
    src = TensorSource(path)

    with torch.device("meta"):
        model = S1ForConditionalGeneration(cfg)
    plan = _plan(model, src, layout, cfg)
    targets = _materialise(model, dtype, device)
    with torch.no_grad():
        for key, pieces in sorted(plan, key=lambda kp: src.file_of[kp[0]]):  # shard by shard
            t = src.get(key)
            if src.meta[key][1] in FP8_DTYPES:
                sk = scale_key(src.meta, key)
                if sk is None:
                    raise ValueError(f"FP8 tensor {key} has no {key}_scale_inv next to it")
                t = dequantize_fp8(t, src.get(sk), block)
            for p in pieces:
                dst = targets[p.dest] if p.dest_index is None else targets[p.dest][p.dest_index]
                dst.copy_(t if p.src_index is None else t[p.src_index])
            del t
    model.vocab_limit = tokenizer_size(path)  # generate() never samples ids this tokenizer lacks
    return model.eval()


def tokenizer_size(directory) -> int | None:
    """The number of ids the tokenizer in a checkpoint directory has (None when it has none):
    what `generate` may sample. OpenS1's layout records it; an Intern-S1 directory is loaded."""
    d = Path(directory)
    layout = d / "opens1_tokenizer.json"
    if layout.is_file():
        try:
            return int(json.loads(layout.read_text(encoding="utf-8"))["vocab_size"])
        except (ValueError, KeyError, TypeError):
            return None
    if (d / "vocab.json").is_file():
        try:
            return len(load_tokenizer(d))
        except (OSError, ValueError, KeyError):
            return None
    return None


def convert_state_dict(sd: dict[str, torch.Tensor], cfg: S1Config, layout: str = "qwen3") -> dict[str, torch.Tensor]:
    """An in-memory checkpoint state dict (HF names, e.g. transformers' `model.state_dict()`)
    -> our parameter names (fused qkv / gate_up, stacked experts). Tensors not fully
    covered raise a ValueError, as loading does."""
    lay = LAYOUTS[layout]
    out: dict[str, torch.Tensor] = {}
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in S1ForConditionalGeneration(cfg).state_dict().items()}
    for key, t in sd.items():
        if any(re.search(p, key) for p in lay.ignore):
            continue
        name = lay.to_ours(key)
        if name is None:
            raise ValueError(f"no rule of layout {layout!r} maps key {key!r}")
        for p in lay.pieces(name, cfg):
            if p.dest not in shapes:
                raise ValueError(f"{key} maps to {p.dest}, which the model does not have")
            if p.dest_index is None:
                out[p.dest] = t if p.src_index is None else t[p.src_index]
                continue
            if p.dest not in out:
                out[p.dest] = torch.full(shapes[p.dest], float("nan"), dtype=t.dtype, device=t.device)
            out[p.dest][p.dest_index] = t if p.src_index is None else t[p.src_index]
    if cfg.text.tie_word_embeddings:
        out.pop("lm_head.weight", None)
        out["lm_head.weight"] = out["language_model.embed_tokens.weight"]
    return out
