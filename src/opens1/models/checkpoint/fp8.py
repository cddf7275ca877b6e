"""FP8 block-quantised checkpoints (DeepSeek-V3 / Qwen3-FP8 format): an F8_E4M3 or F8_E5M2
weight comes with a `<key>_scale_inv` (or `_scale`) tensor; loading dequantises it to the
target dtype on the way in."""

from __future__ import annotations

import math

import torch

SCALE_SUFFIXES = ("_scale_inv", "_scale")
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")  # safetensors dtype names


def scale_key(keys, key: str) -> str | None:
    """The name of `key`'s scale tensor among `keys`, or None."""
    for suf in SCALE_SUFFIXES:
        if key + suf in keys:
            return key + suf
    return None


def dequantize_fp8(w: torch.Tensor, scale: torch.Tensor, block: list[int] | None = None) -> torch.Tensor:
    """Block-wise FP8 dequantisation: each block[0] x block[1] tile of w is multiplied by its
    entry of `scale` ([ceil(out/b0), ceil(in/b1)]); per-tensor and per-row scales work too."""
    w32 = w.to(torch.float32)
    s = scale.to(torch.float32)
    if s.numel() == 1:
        return w32 * s.reshape(())
    if w32.dim() != s.dim():
        raise ValueError(f"FP8 scale shape {tuple(s.shape)} does not fit weight shape {tuple(w32.shape)}")
    for dim in range(w32.dim()):
        b = (block[dim] if block and dim < len(block) else None) or math.ceil(w32.shape[dim] / s.shape[dim])
        if math.ceil(w32.shape[dim] / b) != s.shape[dim]:
            raise ValueError(f"FP8 scale shape {tuple(s.shape)} does not fit weight {tuple(w32.shape)} in blocks {block}")
        s = s.repeat_interleave(b, dim=dim).narrow(dim, 0, w32.shape[dim])
    return w32 * s
