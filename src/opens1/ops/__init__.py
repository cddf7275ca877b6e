"""Kernel choices, in one place: each op is one dispatch function with the plain PyTorch
reference implementation beside it (and a parity test in tests/ops/).

    rms_norm(x, weight, eps)                         ops/norm.py
    grouped_mm(x, w, offsets)                        ops/moe.py   rows grouped by expert times w[e]^T
    moe_experts(x, top_idx, top_w, gate_up, down)    ops/moe.py   SwiGLU experts of a MoE block
    linear_cross_entropy(h, w, target, weight)       ops/cross_entropy.py   fused head + CE, sum(w * ce)
    linear_log_probs(h, w, target)                   ops/cross_entropy.py   fused head -> log p(target), entropy

The architecture files (models/) call these and contain no device- or dtype-specific
branches; what runs fastest where is decided here, and every fast path is checked
against its reference.
"""

from opens1.ops.cross_entropy import linear_cross_entropy, linear_log_probs
from opens1.ops.moe import grouped_mm, moe_experts
from opens1.ops.norm import rms_norm

__all__ = ["grouped_mm", "linear_cross_entropy", "linear_log_probs", "moe_experts", "rms_norm"]
