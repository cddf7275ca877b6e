"""RMSNorm with transformers' numerics.

`rms_norm(x, weight, eps)`: in float32 one fused call; in lower precision HF's order
(normalise in float32, cast back to x's dtype, then multiply the weight), so bf16
checkpoints give HF's logits. `weight=None` normalises only (the caller scales, e.g.
Qwen3's q/k norm, whose q and k weights differ but share one call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x [..., D], weight [D] or None -> [..., D] in x's dtype (promoted with weight's)."""
    shape = (x.shape[-1],)
    if x.dtype == torch.float32 and (weight is None or weight.dtype == torch.float32):
        return F.rms_norm(x, shape, weight, eps)
    y = F.rms_norm(x.float(), shape, eps=eps).to(x.dtype)
    return y if weight is None else weight * y


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """transformers' Qwen3RMSNorm, written out."""
    h = x.float()
    y = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if weight is None else weight * y
