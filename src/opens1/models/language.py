"""The Qwen3 decoder (dense or MoE), without the LM head: `Qwen3Model`.

Module names match transformers' `Qwen3Model` / `Qwen3MoeModel` (embed_tokens,
layers.{i}.self_attn.{q,k,v,o}_proj, q_norm, k_norm, mlp.{gate,up,down}_proj or
mlp.gate + mlp.experts.{gate_up_proj,down_proj}, input_layernorm,
post_attention_layernorm, norm), so checkpoints map one to one apart from the
stacked experts.

The decoder takes embeddings, not ids, so the multimodal wrapper can splice
image and series features in first. Masking and positions are decided once per
forward (`attention_inputs`) and shared by all layers:
  - no padding, no documents, no cache: SDPA's built-in causal mask (fastest);
  - `attention_mask` [B, T] (0 = padding): causal & valid keys, positions count
    only real tokens (left padding does not shift them, as in HF generate);
  - `doc_ids` [B, T] (packed documents): block-diagonal causal mask, positions
    restart at every document;
  - a KV cache: the cache plans the mask and positions per row (`cache.prepare`), and each
    attention layer writes its keys/values through that plan (`plan.update`).
"""

from __future__ import annotations

import torch
from torch import nn

from opens1.config import TextConfig
from opens1.models.layers import MLP, Attention, RMSNorm, RotaryEmbedding
from opens1.models.moe import SparseMoeBlock


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer_idx)
        self.is_moe = cfg.is_moe_layer(layer_idx)
        self.mlp = SparseMoeBlock(cfg) if self.is_moe else MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, is_causal, cache=None):
        # pre-norm residual blocks; returns (x, router logits or None); cache: a CachePlan or None
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, cache)
        h = self.post_attention_layernorm(x)
        if self.is_moe:
            h, logits = self.mlp(h)
            return x + h, logits
        return x + self.mlp(h), None


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """doc_ids [B, T] -> positions restarting at 0 at every document start."""
    T = doc_ids.shape[1]
    idx = torch.arange(T, device=doc_ids.device).expand_as(doc_ids)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # start of own document
    return idx - first


def attention_inputs(attention_mask=None, doc_ids=None, position_ids=None, shape=None, device=None):
    """(mask or None, is_causal, position_ids [B, T]) for a forward without a cache."""
    B, T = shape
    idx = torch.arange(T, device=device)
    causal = idx[None, :] <= idx[:, None]  # [T, T] query i sees key j <= i
    mask = None
    if doc_ids is not None:
        same = doc_ids[:, :, None] == doc_ids[:, None, :]  # [B, T, T]
        mask = causal & same
        if position_ids is None:
            position_ids = document_positions(doc_ids)
    if attention_mask is not None and not bool(attention_mask.all()):
        valid = attention_mask.bool()
        m = causal[None] & valid[:, None, :]
        mask = m if mask is None else mask & m
        mask = mask | torch.eye(T, dtype=torch.bool, device=device)  # padding queries see themselves: no NaN
        if position_ids is None:
            position_ids = (valid.long().cumsum(-1) - 1).clamp_min(0)
    if position_ids is None:
        position_ids = idx.expand(B, T)
    return (None if mask is None else mask[:, None]), mask is None, position_ids


class Qwen3Model(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg)
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor, *, attention_mask=None, position_ids=None, doc_ids=None,
                kv_cache=None, cache_rows=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """inputs_embeds [B, T, H] -> (hidden [B, T, H] after the final norm, router logits per MoE layer)."""
        B, T, _ = inputs_embeds.shape
        plan = None
        if kv_cache is not None:
            if doc_ids is not None:
                raise ValueError("doc_ids (packed documents) cannot be combined with a KV cache")
            plan = kv_cache.prepare(attention_mask, T, cache_rows)
            mask, is_causal = plan.mask, plan.is_causal
            position_ids = plan.position_ids if position_ids is None else position_ids
        else:
            mask, is_causal, position_ids = attention_inputs(
                attention_mask, doc_ids, position_ids, (B, T), inputs_embeds.device)
        cos, sin = self.rotary(position_ids, inputs_embeds.dtype)
        x, router_logits = inputs_embeds, []
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x, logits = torch.utils.checkpoint.checkpoint(
                    layer, x, cos, sin, mask, is_causal, plan, use_reentrant=False)
            else:
                x, logits = layer(x, cos, sin, mask, is_causal, plan)
            if logits is not None:
                router_logits.append(logits)
        return self.norm(x), router_logits
