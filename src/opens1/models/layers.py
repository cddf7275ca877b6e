"""Building blocks of the Qwen3 decoder: RMSNorm, rotary embeddings (with HF's
rope scaling variants), grouped-query attention with per-head q/k RMSNorm, and
the SwiGLU MLP.

Design choices
- Numerics follow transformers' Qwen3 so that checkpoints give the same logits:
  RMSNorm normalises in float32 and multiplies the weight after casting back;
  RoPE angles are computed in float32; the rotate-half convention is HF's.
- Fused projections: `self_attn.qkv_proj` (q, k, v row blocks) and the dense
  `mlp.gate_up_proj`; the checkpoint adapter maps HF's separate matrices onto them.
  Layers call F.linear on the modules' weights (module-call overhead rivals a small
  matmul in decode); LoRA-style weight parametrizations still apply.
- Attention always goes through `F.scaled_dot_product_attention` (flash / memory
  efficient kernels where PyTorch has them). The caller passes either no mask
  (plain causal: `is_causal=True`) or one boolean mask [B, 1, Tq, Tk] built once
  per forward, so the layers stay free of masking logic.
- Rotary frequencies are not buffers: a model built on the meta device and
  materialised from a checkpoint must not need buffer re-initialisation, so
  `RotaryEmbedding` computes `inv_freq` from the config and caches it per device.
- Kernel choices (RMSNorm's precision handling, the MoE expert kernels, the fused
  head + loss) live in `opens1.ops`; this file holds no device-specific branches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from opens1 import ops
from opens1.config import TextConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ProjectorMLP(nn.Module):
    """The modality projector of InternVL/Intern-S1: LayerNorm (eps 1e-5, PyTorch's default,
    as HF) -> Linear -> exact GELU -> Linear, [.., in_dim] -> [.., out_dim]. The image and the
    time-series projectors are both this (the image one pixel-shuffles first)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=1e-5)
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(self.layer_norm(x))))

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        for lin in (self.linear_1, self.linear_2):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        self.layer_norm.reset_parameters()


# ---------------------------------------------------------------- rotary embeddings


def rope_frequencies(cfg: TextConfig, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] float32, attention scaling) for cfg's rope type.

    Implements the rope types transformers defines for Qwen3-family configs:
    default, linear, dynamic (NTK; depends on `seq_len`), yarn and llama3.
    """
    dim = cfg.head_dim
    base = float(cfg.rope_theta)
    rs = dict(cfg.rope_scaling or {})
    kind = rs.get("rope_type", rs.get("type", "default"))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv_freq = 1.0 / (base**exponents)
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / float(rs["factor"]), 1.0
    if kind == "dynamic":
        # NTK-aware: stretch the base once the sequence outgrows the trained length
        max_pos = cfg.max_position_embeddings
        seq_len = max(seq_len or max_pos, max_pos)
        factor = float(rs["factor"])
        base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (base**exponents), 1.0
    if kind == "yarn":
        return _yarn(cfg, rs, base, dim)
    if kind == "llama3":
        return _llama3(rs, inv_freq, cfg), 1.0
    raise ValueError(f"unsupported rope_type {kind!r} (supported: default, linear, dynamic, yarn, llama3)")


def _yarn(cfg: TextConfig, rs: dict, base: float, dim: int) -> tuple[torch.Tensor, float]:
    """YaRN (arXiv 2309.00071) exactly as transformers computes it."""
    orig = rs.get("original_max_position_embeddings") or cfg.max_position_embeddings
    factor = rs.get("factor") or cfg.max_position_embeddings / orig

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attn = rs.get("attention_factor")
    if attn is None:
        m, m_all = rs.get("mscale"), rs.get("mscale_all_dim")
        attn = float(mscale(factor, m) / mscale(factor, m_all)) if (m and m_all) else mscale(factor)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(rot):  # dimension index whose wavelength makes `rot` turns in `orig` tokens
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation = 1 - ramp  # 1: keep the original frequency (high-frequency dims)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attn)


def _llama3(rs: dict, inv_freq: torch.Tensor, cfg: TextConfig) -> torch.Tensor:
    factor, lo, hi = float(rs["factor"]), float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    old = rs.get("original_max_position_embeddings") or cfg.max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / lo, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """cos/sin for given position ids. Holds no parameters or buffers.

    Returns `sin` with the rotate-half sign folded in (first half negated), so that
    rope(x) = x * cos + roll(x, D/2) * sin: one roll instead of chunk/neg/cat, and
    bit-identical to HF's x * cos + rotate_half(x) * sin. The angles are computed from
    the positions on every call (position * inv_freq in float32, HF's expression): no
    table to grow, no host sync, and inside a compiled step they fuse into the graph."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.dynamic = (cfg.rope_scaling or {}).get("rope_type") == "dynamic"
        self._cache: dict = {}  # device -> (freq, sign, scaling)

    def frequencies(self, device: torch.device, max_pos: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(freq [D] = inv_freq twice, sign [D] = (-1 first half, +1 second) x scaling, attention
        scaling) on `device`; dynamic NTK rescales past the trained length."""
        if self.dynamic and max_pos is not None and max_pos > self.cfg.max_position_embeddings:
            return self._tables(*rope_frequencies(self.cfg, max_pos), device)  # rare: not cached
        key = str(device)
        if key not in self._cache:
            self._cache[key] = self._tables(*rope_frequencies(self.cfg), device)
        return self._cache[key]

    @staticmethod
    def _tables(inv_freq: torch.Tensor, scale: float, device) -> tuple[torch.Tensor, torch.Tensor, float]:
        ones = torch.ones_like(inv_freq)
        return torch.cat((inv_freq, inv_freq)).to(device), (torch.cat((-ones, ones)) * scale).to(device), scale

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids [B, T] -> cos, signed sin [B, 1, T, head_dim] (the 1 broadcasts over heads)
        # dynamic NTK depends on the longest position: one host sync, only for that rope type
        max_pos = int(position_ids.max()) + 1 if self.dynamic else None
        freq, sign, scale = self.frequencies(position_ids.device, max_pos)
        angles = position_ids[:, None, :, None].float() * freq  # [B, 1, T, D] in float32
        cos = angles.cos() if scale == 1.0 else angles.cos() * scale
        return cos.to(dtype), (angles.sin() * sign).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D]; sin carries the rotate-half sign (see RotaryEmbedding)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


# ---------------------------------------------------------------- attention and MLP


class Attention(nn.Module):
    """GQA with per-head RMSNorm on q and k before RoPE (Qwen3).

    q, k and v come from ONE fused projection, `qkv_proj` [(Hq + 2 Hkv) * D, H]
    (rows: q heads, then k heads, then v heads); the checkpoint adapter maps HF's
    separate q_proj/k_proj/v_proj onto its row blocks. One matmul instead of three,
    and q and k are normalised and rotated together, which matters for decode where
    every op's fixed cost dominates."""

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        if self.n_heads % self.n_kv:
            raise ValueError(f"num_attention_heads {self.n_heads} is not a multiple of num_key_value_heads {self.n_kv}")
        h, bias = cfg.hidden_size, cfg.attention_bias
        self.qkv_proj = nn.Linear(h, (self.n_heads + 2 * self.n_kv) * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.eps = cfg.rms_norm_eps

    def project(self, x, cos, sin):
        """x [B, T, H] -> q [B, Hq, T, D], k, v [B, Hkv, T, D]; q and k normalised and rotated."""
        B, T, _ = x.shape
        Hq, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        # F.linear on the modules' weights: the module call machinery costs as much as a
        # small matmul in decode (hooks on the layer, e.g. FSDP's, still run)
        qkv = F.linear(x, self.qkv_proj.weight, self.qkv_proj.bias)
        qkv = qkv.view(B, T, Hq + 2 * Hkv, D).transpose(1, 2)  # [B, heads, T, D]
        qk, v = qkv[:, : Hq + Hkv], qkv[:, Hq + Hkv:]
        # per-head RMSNorm of q and k in one call: normalise, then scale by q_norm's weight
        # on the q heads and k_norm's on the k heads ([Hq + Hkv, 1, D])
        w = torch.cat([self.q_norm.weight.expand(Hq, -1), self.k_norm.weight.expand(Hkv, -1)])[:, None]
        qk = apply_rope(ops.rms_norm(qk, None, self.eps) * w, cos, sin)
        return qk[:, :Hq], qk[:, Hq:], v

    def forward(self, x, cos, sin, mask=None, is_causal=True, cache=None):
        # x [B, T, H]; cos/sin [B, 1, T, D]; mask None or bool [B, 1, T, Tk] (True = attend);
        # is_causal only applies without a mask (plain causal self-attention over T == Tk);
        # cache: this forward's KV-cache plan (infer/kv_cache.py) or None
        B, T, _ = x.shape
        Hq, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        q, k, v = self.project(x, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [B, Hkv, Tk, D]: the slots to attend over
        causal = is_causal and mask is None and T > 1
        # enable_gqa: the CPU flash kernel and CUDA kernels share kv heads without copying
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=Hq != Hkv)
        return F.linear(y.transpose(1, 2).reshape(B, T, Hq * D), self.o_proj.weight, self.o_proj.bias)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), with gate and up fused into `gate_up_proj`
    [2I, H] (gate rows first; the checkpoint adapter maps HF's gate_proj/up_proj)."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.intermediate = intermediate
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, self.gate_up_proj.weight).split(self.intermediate, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj.weight)
