"""Training FLOPs per token and step, and the measured matmul peak they are divided by for
MFU (model FLOPs utilisation) on hardware without a data-sheet number, such as a shared CPU."""

from __future__ import annotations

import time
from typing import Any

import torch


def flops_per_token(model_cfg, seq_len: int, *, head: bool = True) -> float:
    """Training FLOPs per token: 6 x (active non-embedding parameters) for the matmuls,
    plus 12 x layers x attention width x seq_len for the attention scores and values
    (PaLM appendix B). The vision/series towers are not counted (text-dominated runs).
    head=False leaves out the LM head (6 x hidden x vocab), see `step_flops`."""
    t = model_cfg.text
    h, L = t.hidden_size, t.num_hidden_layers
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    attn = h * (q + 2 * kv) + q * h
    dense_mlp = 3 * h * t.intermediate_size
    moe_mlp = 3 * h * t.moe_intermediate_size * t.num_experts_per_tok + h * t.num_experts
    n = sum(attn + (moe_mlp if t.is_moe_layer(i) else dense_mlp) for i in range(L))
    if head:
        n += h * t.vocab_size  # the LM head (the embedding lookup costs no matmul)
    return 6.0 * n + 12.0 * L * q * seq_len


def step_flops(model_cfg, seq_len: int, tokens: int, head_rows: int) -> float:
    """Training FLOPs of a step: the body on every token, the LM head on the `head_rows`
    rows that carry a label (the only ones the loss runs it on; all of them in pretraining,
    about a fifth in SFT)."""
    t = model_cfg.text
    return tokens * flops_per_token(model_cfg, seq_len, head=False) + head_rows * 6.0 * t.hidden_size * t.vocab_size


_PEAK: dict[tuple[str, Any], float] = {}


def measured_peak_flops(device: torch.device, dtype: torch.dtype | None = None, n: int | None = None) -> float:
    """Peak matmul FLOP/s measured once per (device, dtype) with a square matmul: the
    denominator of MFU on hardware without a data-sheet number (e.g. a shared CPU)."""
    dtype = dtype or torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)  # big enough to reach a GPU's peak
    key = (str(device), dtype)
    if key not in _PEAK:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            a @ b
            reps += 1
        sync(device)
        _PEAK[key] = 2.0 * n**3 * reps / (time.perf_counter() - t0)
    return _PEAK[key]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
