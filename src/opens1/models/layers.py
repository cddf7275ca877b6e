"""Building blocks of the Qwen3 decoder: RMSNorm, rotary embeddings (with HF's
rope scaling variants), grouped-query attention with per-head q/k RMSNorm, and
the SwiGLU MLP.

Design choices
- Numerics follow transformers' Qwen3 so that checkpoints give the same logits:
  RMSNorm normalises in float32 and multiplies the weight after casting back;
  RoPE angles are computed in float32; the rotate-half convention is HF's.
- Attention always goes through `F.scaled_dot_product_attention` (flash / memory
  efficient kernels where PyTorch has them). The caller passes either no mask
  (plain causal: `is_causal=True`) or one boolean mask [B, 1, Tq, Tk] built once
  per forward, so the layers stay free of masking logic.
- Rotary frequencies are not buffers: a model built on the meta device and
  materialised from a checkpoint must not need buffer re-initialisation, so
  `RotaryEmbedding` computes `inv_freq` from the config and caches it per device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from opens1.config import TextConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32, cast back, then scale: HF's order (matters in bf16)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return self.weight * y

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


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
    """cos/sin tables for given position ids. Holds no parameters or buffers."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.dynamic = (cfg.rope_scaling or {}).get("rope_type") == "dynamic"
        self._cache: dict = {}  # device -> (inv_freq, scaling)

    def _freqs(self, device: torch.device, max_pos: int | None) -> tuple[torch.Tensor, float]:
        if self.dynamic and max_pos is not None and max_pos > self.cfg.max_position_embeddings:
            inv, scale = rope_frequencies(self.cfg, max_pos)  # rare: no caching past the trained length
            return inv.to(device), scale
        key = str(device)
        if key not in self._cache:
            inv, scale = rope_frequencies(self.cfg)
            self._cache[key] = (inv.to(device), scale)
        return self._cache[key]

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids [B, T] -> cos, sin [B, 1, T, head_dim] (the 1 broadcasts over heads)
        max_pos = int(position_ids.max()) + 1 if self.dynamic else None
        inv_freq, scale = self._freqs(position_ids.device, max_pos)
        freqs = position_ids.float()[..., None] * inv_freq  # [B, T, D/2] in float32
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------- attention and MLP


class Attention(nn.Module):
    """GQA with per-head RMSNorm on q and k before RoPE (Qwen3)."""

    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        if self.n_heads % self.n_kv:
            raise ValueError(f"num_attention_heads {self.n_heads} is not a multiple of num_key_value_heads {self.n_kv}")
        h, bias = cfg.hidden_size, cfg.attention_bias
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, is_causal=True, kv_cache=None):
        # x [B, T, H]; cos/sin [B, 1, T, D]; mask None or bool [B, 1, T, Tk] (True = attend);
        # is_causal only applies without a mask (plain causal self-attention over T == Tk)
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, heads, T, D]
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # [B, n_kv, Tk, D]: all cached slots
        if self.n_kv != self.n_heads:
            # explicit repeat: SDPA's enable_gqa falls back to the slow math kernel on CPU
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        causal = is_causal and mask is None and T > 1
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
