"""Qwen3-MoE sparse block: softmax router, top-k experts, SwiGLU experts run as
one grouped matmul, and the Switch-Transformer load-balancing loss.

Design choices
- Expert weights are stacked parameters, `experts.gate_up_proj` [E, 2I, H] (gate
  rows first, then up) and `experts.down_proj` [E, H, I], the layout transformers 5
  uses in memory. The checkpoint adapter converts from and to per-expert HF keys.
- Dispatch sorts the (token, expert) assignments by expert so each expert's rows
  are contiguous, then runs ONE grouped matmul per projection
  (`torch._grouped_mm` with cumulative offsets: no host sync, no Python loop over
  experts). `_grouped_mm` is a private op that needs 16-byte-aligned strides, so
  a fallback pads each expert's rows to the largest group and uses `torch.bmm`.
- Exception, CPU decode only (no autograd, <= SMALL_DECODE assignments): on CPU
  the grouped kernel loops over all E experts internally, most of them empty for a
  single token, so a decode step instead runs the k chosen experts' matvecs directly.
- Outputs are un-sorted with a gather and mixed with the routing weights by a
  weighted sum (no index_add_: deterministic, and index_add_ stalls badly on a busy
  multi-threaded CPU).
- The router keeps its logits so the model can compute the aux loss over all
  layers the way transformers does (counts and probabilities summed over layers
  before the product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opens1.config import TextConfig

# CPU inference with at most this many (token, expert) assignments takes the per-assignment
# path (decode steps); everything else, and anything with autograd, runs grouped
SMALL_DECODE = 16

# (device type, dtype) -> whether torch._grouped_mm worked there; filled on first use
_GROUPED_MM_OK: dict[tuple[str, torch.dtype], bool] = {}


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous:
    `_grouped_mm`'s backward rejects expanded (stride-0) gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.contiguous()


def _aligned(t: torch.Tensor, *dims: int) -> bool:
    return all((d * t.element_size()) % 16 == 0 for d in dims)


def grouped_matmul(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Rows of x grouped by expert (contiguous, sizes `counts`, ends `offsets`) times
    that expert's w^T. x [N, K], w [E, M, K] -> [N, M]."""
    if x.dtype != torch.bfloat16 and torch.compiler.is_compiling():
        # _grouped_mm's compile-time (meta) kernel accepts only bf16, and the padded fallback
        # sizes a buffer from the data: run this one op eagerly, the rest of the layer compiled
        return _grouped_matmul_eager(x, w, offsets, counts)
    return _grouped_matmul(x, w, offsets, counts)


def _grouped_matmul(x, w, offsets, counts):
    E, M, K = w.shape
    key = (x.device.type, x.dtype)
    use_grouped = hasattr(torch, "_grouped_mm") and _GROUPED_MM_OK.get(key, True) and _aligned(x, K, M)
    if use_grouped:
        try:
            y = torch._grouped_mm(x, w.transpose(-2, -1), offs=offsets)
            _GROUPED_MM_OK[key] = True
            return _ContiguousGrad.apply(y) if torch.is_grad_enabled() else y
        except (RuntimeError, NotImplementedError):
            _GROUPED_MM_OK[key] = False  # e.g. float32 on GPUs whose kernel is bf16-only
    return _padded_bmm(x, w, offsets, counts)


_grouped_matmul_eager = torch.compiler.disable(_grouped_matmul)


def _padded_bmm(x, w, offsets, counts):
    # Fallback: scatter rows into [E, C, K] (C = largest group), one bmm, gather back.
    E, M, K = w.shape
    N = x.shape[0]
    cap = int(counts.max()) if N else 0
    expert = torch.repeat_interleave(torch.arange(E, device=x.device), counts, output_size=N)
    rank = torch.arange(N, device=x.device) - (offsets - counts)[expert]  # row within its group
    buf = x.new_zeros(E, max(cap, 1), K)
    buf[expert, rank] = x
    out = torch.bmm(buf, w.transpose(-2, -1))  # [E, C, M]
    return out[expert, rank]


def expert_counts(flat_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Assignments per expert [E] (long). bincount on CPU; on accelerators histc,
    which needs no device-to-host sync (bincount must first find the max)."""
    if flat_idx.device.type == "cpu":
        return torch.bincount(flat_idx, minlength=num_experts)
    return torch.histc(flat_idx.float(), bins=num_experts, min=0, max=num_experts).long()


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden: int, intermediate: int):
        super().__init__()
        self.num_experts, self.intermediate = num_experts, intermediate
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))

    def forward(self, x: torch.Tensor, top_idx: torch.Tensor, top_w: torch.Tensor) -> torch.Tensor:
        # x [N, H]; top_idx, top_w [N, k] -> [N, H]
        N, k = top_idx.shape
        if x.device.type == "cpu" and N * k <= SMALL_DECODE and not torch.is_grad_enabled():
            return self._decode_cpu(x, top_idx, top_w)
        flat = top_idx.reshape(-1)
        order = flat.argsort(stable=True)  # assignments sorted by expert
        token = order // k  # source token of each sorted assignment
        counts = expert_counts(flat, self.num_experts)
        offsets = counts.cumsum(0).to(torch.int32)
        xs = x[token]  # [N*k, H]
        h = grouped_matmul(xs, self.gate_up_proj, offsets, counts)  # [N*k, 2I]
        gate, up = h.split(self.intermediate, dim=-1)
        h = (F.silu(gate) * up).contiguous()
        y = grouped_matmul(h, self.down_proj, offsets, counts)  # [N*k, H], sorted by expert
        # un-sort with a gather (inverse permutation) and mix the k outputs of each token:
        # deterministic, unlike index_add_ (atomics on GPU)
        y = y[order.argsort()].view(N, k, -1)  # [N, k, H] in (token, choice) order
        return (y * top_w.to(y.dtype)[:, :, None]).sum(dim=1)

    def _decode_cpu(self, x, top_idx, top_w):
        """CPU decode specialisation (a handful of tokens, no autograd): on CPU the
        grouped kernel visits all E experts (two matmul calls each, most of them empty),
        while a decode step needs only its N*k chosen ones. k matrix-vector products per
        token, read straight from the stacked weights (no gather copy); the indices are
        already on the host, so .tolist() costs no device sync."""
        rows = []
        # rows stay 2-D ([1, H]): a 1-D F.linear takes torch.mv, several times slower on CPU
        for xn, experts, weights in zip(x.split(1), top_idx.tolist(), top_w.tolist()):
            acc = None
            for e, wt in zip(experts, weights):
                gate, up = F.linear(xn, self.gate_up_proj[e]).split(self.intermediate, dim=-1)
                y = F.linear(F.silu(gate) * up, self.down_proj[e]) * wt
                acc = y if acc is None else acc + y
            rows.append(acc)
        return torch.cat(rows) if len(rows) > 1 else rows[0]


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
