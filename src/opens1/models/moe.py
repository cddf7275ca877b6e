"""Qwen3-MoE sparse block: softmax router, top-k experts (SwiGLU), and the
Switch-Transformer load-balancing loss.

Design choices
- Expert weights are stacked parameters, `experts.gate_up_proj` [E, 2I, H] (gate
  rows first, then up) and `experts.down_proj` [E, H, I], the layout transformers 5
  uses in memory. The checkpoint adapter converts from and to per-expert HF keys.
- How the chosen experts run (one grouped matmul per projection, or a decode-time
  specialisation) is a kernel choice: `opens1.ops.moe_experts` makes it, with the
  plain per-expert loop beside it as the reference.
- The router keeps its logits so the model can compute the aux loss over all
  layers the way transformers does (counts and probabilities summed over layers
  before the product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opens1 import ops
from opens1.config import TextConfig


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.num_experts, self.intermediate = num_experts, intermediate
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))

    def forward(self, x: torch.Tensor, top_idx: torch.Tensor, top_w: torch.Tensor) -> torch.Tensor:
        # x [N, H]; top_idx, top_w [N, k] -> [N, H]
        return ops.moe_experts(x, top_idx, top_w, self.gate_up_proj, self.down_proj)


class SparseMoeBlock(nn.Module):
    """Router (`gate`, no bias) + stacked experts; no shared experts (Qwen3-MoE)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.top_k, self.norm_topk_prob = cfg.num_experts_per_tok, cfg.norm_topk_prob
        if not 0 < self.top_k <= cfg.num_experts:
            raise ValueError(f"num_experts_per_tok={self.top_k} must be in 1..num_experts={cfg.num_experts}")
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = Experts(cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x [B, T, H] -> (out [B, T, H], router logits [B*T, E])
        B, T, H = x.shape
        flat = x.reshape(-1, H)
        logits, top_w, top_idx = self.route(flat)
        out = self.experts(flat, top_idx, top_w)
        return out.view(B, T, H), logits

    def route(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """flat [N, H] -> (router logits [N, E], top-k weights [N, k] in flat's dtype, expert ids [N, k])."""
        logits = F.linear(flat, self.gate.weight)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        top_w, top_idx = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return logits, top_w.to(flat.dtype), top_idx


def load_balancing_loss(router_logits: list[torch.Tensor], top_k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch-Transformer aux loss, as transformers' Qwen3-MoE computes it:
    E * sum_e f_e * P_e, where f_e (fraction of assignments to expert e) and P_e
    (mean router probability) are each averaged over all layers and tokens.
    router_logits: one [N, E] per MoE layer; mask [N] (1 = real token) or None."""
    E = router_logits[0].shape[-1]
    dev = router_logits[0].device
    counts = torch.zeros(E, dtype=torch.float32, device=dev)
    prob_sum = torch.zeros(E, dtype=torch.float32, device=dev)
    rows = torch.zeros((), dtype=torch.float32, device=dev)
    m = None if mask is None else mask.reshape(-1).to(dev, torch.float32)
    for logits in router_logits:
        probs = torch.softmax(logits.float(), dim=-1)
        sel = probs.topk(top_k, dim=-1).indices  # [N, k]
        w = torch.ones_like(sel, dtype=torch.float32) if m is None else m[:, None].expand_as(sel)
        counts = counts.scatter_add(0, sel.reshape(-1), w.reshape(-1))
        prob_sum = prob_sum + (probs if m is None else probs * m[:, None]).sum(0)
        rows = rows + (probs.shape[0] if m is None else m.sum())
    return E * torch.sum((counts / rows) * (prob_sum / rows))
