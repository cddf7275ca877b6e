"""A compiled decode step over the static KV cache (gpt-fast style).

Eager decoding of a small model is bound by per-op overhead: a step of the `tiny`
preset issues about a thousand dispatched ops for a few hundred microseconds of
arithmetic. This module writes ONE decode step as a pure function of tensors (no
Python-side cache state, no host sync) and hands it to `torch.compile`, which fuses the
norms, RoPE, routing and SwiGLU into a few kernels and leaves the matmuls to the
BLAS. Prefill stays eager (it is one big forward, not overhead-bound).

Shapes are fixed within a generation (batch B, cache length S):
  - the new key/value is written into slot `pos` of `KVCache.k/.v` [L, B, Hkv, S, D]
    in place (an index_copy on the cache buffers);
  - attention reads all S slots with a boolean mask: slots written so far that hold
    real tokens (`KVCache.valid`, so left padding stays masked);
  - each row's rotary position is its count of real tokens, a tensor input.
Everything else is the eager model's own code (norms, `Attention.project`, dense MLP,
`SparseMoeBlock.route`); MoE layers gather the chosen experts' weights ([B*k, 2I, H])
and run two batched matvecs: no host sync, no loop over experts.

Use it through `model.generate(..., compile=True)`. The first call compiles (10-20 s on
2 CPU cores); the step is compiled with dynamic shapes, so later calls with another
batch size or cache length reuse the code (RL rollouts change B every step).
Numerics: the same float32 expressions as the eager model, but the compiler may
reorder reductions, so logits agree to ~1e-5, not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from opens1.models.layers import rope_frequencies


def _moe(block, x: torch.Tensor) -> torch.Tensor:
    # x [B, H] -> [B, H]: the block's router, then the chosen experts' weights gathered
    # ([B*k, 2I, H]) and two batched matvecs (the eager CPU decode path loops on the host)
    _, top_w, top_idx = block.route(x)  # [B, k]
    ex = block.experts
    idx = top_idx.reshape(-1)  # [B*k]
    xk = x.repeat_interleave(block.top_k, dim=0)[:, :, None]  # [B*k, H, 1]
    h = torch.bmm(ex.gate_up_proj[idx], xk).squeeze(-1)  # [B*k, 2I]
    gate, up = h.split(ex.intermediate, dim=-1)
    y = torch.bmm(ex.down_proj[idx], (F.silu(gate) * up)[:, :, None]).squeeze(-1)  # [B*k, H]
    return (y.view(x.shape[0], block.top_k, -1) * top_w[:, :, None]).sum(1)


def decode_step(model, tok: torch.Tensor, slot: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, valid: torch.Tensor, inv_freq: torch.Tensor, rope_scale: float) -> torch.Tensor:
    """One token per row. tok [B] ids; slot [1] the cache slot to write (same for all rows);
    pos [B] rotary positions; k/v_cache [L, B, Hkv, S, D]; valid [B, S] (already marks the
    new slot). Returns logits [B, V]. The layers' own norms, projections (q/k norm + RoPE)
    and dense MLPs are called as they are; only the cache write and the mask are new."""
    lm = model.language_model
    B = tok.shape[0]
    x = lm.embed_tokens.weight[tok][:, None]  # [B, 1, H]
    cos, sin = lm.rotary._angles(pos, inv_freq, rope_scale, x.dtype)  # [B, D]
    cos, sin = cos[:, None, None], sin[:, None, None]  # [B, 1, 1, D]
    mask = valid[:, None, None, :]  # [B, 1, 1, S]
    for i, layer in enumerate(lm.layers):
        att = layer.self_attn
        q, k, v = att.project(layer.input_layernorm(x), cos, sin)  # [B, heads, 1, D]
        k_cache[i].index_copy_(2, slot, k)
        v_cache[i].index_copy_(2, slot, v)
        y = F.scaled_dot_product_attention(q, k_cache[i], v_cache[i], attn_mask=mask, enable_gqa=att.n_heads != att.n_kv)
        x = x + F.linear(y.reshape(B, 1, -1), att.o_proj.weight, att.o_proj.bias)
        h = layer.post_attention_layernorm(x)
        x = x + (_moe(layer.mlp, h[:, 0])[:, None] if layer.is_moe else layer.mlp(h))
    return F.linear(lm.norm(x[:, 0]), model.lm_head.weight)


def cache_length(n: int) -> int:
    """Cache slots for n tokens, rounded up to a power of two (at least 128): few distinct
    cache shapes, so the compiled step's shape guards rarely fail and trigger a recompile."""
    return max(128, 1 << (n - 1).bit_length())


class StaticDecoder:
    """Runs compiled decode steps against a `KVCache` that an eager prefill filled.

    dec = StaticDecoder(model)             # compiles lazily on the first step
    logits = dec.step(cache, tok [B])      # writes slot cache.length, returns [B, V]
    """

    _compiled = None  # one compiled function per process; shapes key its cache

    def __init__(self, model):
        self.model = model
        inv, scale = rope_frequencies(model.config.text)
        self.inv_freq, self.scale = inv.to(model.device), scale
        if (model.config.text.rope_scaling or {}).get("rope_type") == "dynamic":
            raise ValueError("compiled decode does not support dynamic NTK rope (its frequencies depend on length)")
        if StaticDecoder._compiled is None:
            # fullgraph: a graph break here would silently bring the per-op overhead back
            StaticDecoder._compiled = torch.compile(decode_step, fullgraph=True, dynamic=True)

    @torch.inference_mode()
    def step(self, cache, tok: torch.Tensor) -> torch.Tensor:
        s = cache.reserve_aligned(1)  # host-side slot index; marks the slot valid
        pos = cache.valid[:, :s].sum(-1)  # real tokens before this one (left padding does not count)
        slot = torch.tensor([s], device=tok.device)
        return StaticDecoder._compiled(self.model, tok, slot, pos, cache.k, cache.v, cache.valid,
                                       self.inv_freq, self.scale)
