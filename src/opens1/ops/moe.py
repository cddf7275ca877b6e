"""The SwiGLU experts of a MoE block, and the grouped matmul under them.

`moe_experts(x, top_idx, top_w, gate_up, down)` computes, for every token n,
    sum_j top_w[n, j] * down[e] @ (silu(g) * u),  [g; u] = gate_up[e] @ x[n],  e = top_idx[n, j]
with gate_up [E, 2I, H] (gate rows first) and down [E, H, I]. Three paths, one dispatch:
  - grouped (training, prefill, anything with autograd): sort the (token, expert)
    assignments by expert so each expert's rows are contiguous, then ONE grouped matmul per
    projection (`grouped_mm`): no host sync, no Python loop over experts;
  - gathered (under torch.compile without autograd: compiled decode): gather the chosen
    experts' weights ([N*k, 2I, H]) and run two batched matvecs: fixed shapes, no
    data-dependent sizes, no host sync, so the step compiles into one graph;
  - host loop (eager CPU decode: at most HOST_LOOP_MAX assignments, no autograd): k matvecs
    per token read straight from the stacked weights. On CPU the grouped kernel visits all
    E experts (two matmul calls each, most of them empty) and the gather copies weights,
    while a decode token needs only its k experts; the indices are on the host already, so
    .tolist() costs no device sync. Measured for one token of the tiny preset (E=8, H=I=128,
    one thread): 65 us against 123 us grouped and 203 us gathered.
Outputs are un-sorted with a gather and mixed with the routing weights by a weighted sum
(no index_add_: deterministic, and index_add_ stalls badly on a busy multi-threaded CPU).

`grouped_mm(x, w, offsets)` is `torch._grouped_mm` where it works (a private op: it needs
16-byte-aligned strides, some builds have it for bf16 only, and under torch.compile its
meta kernel is bf16-only), else a padded `torch.bmm` with the same result.
`moe_experts_reference` is the per-token, per-expert loop that both paths must equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# assignments (tokens x k) up to which an eager autograd-free CPU call takes the host loop.
# Measured on the tiny preset (E=8, k=2, H=I=128, one thread), host loop vs grouped:
# 1 token 53 vs 171 us, 2 tokens 121 vs 211 us, 3 tokens 207 vs 182 us, 8 tokens 559 vs 230 us
HOST_LOOP_MAX = 4

# (device type, dtype) -> whether torch._grouped_mm ran there; filled on first use
_grouped_mm_ok: dict[tuple[str, torch.dtype], bool] = {}


def moe_experts(x: torch.Tensor, top_idx: torch.Tensor, top_w: torch.Tensor, gate_up: torch.Tensor,
                down: torch.Tensor) -> torch.Tensor:
    """x [N, H]; top_idx, top_w [N, k]; gate_up [E, 2I, H]; down [E, H, I] -> [N, H]."""
    N, k = top_idx.shape
    if torch.is_grad_enabled():
        return _grouped(x, top_idx, top_w, gate_up, down)
    if torch.compiler.is_compiling():
        return _gathered(x, top_idx, top_w, gate_up, down)
    if x.device.type == "cpu" and N * k <= HOST_LOOP_MAX:
        return _host_loop(x, top_idx, top_w, gate_up, down)
    return _grouped(x, top_idx, top_w, gate_up, down)


def _swiglu(h: torch.Tensor) -> torch.Tensor:
    # h [.., 2I] (gate, then up) -> [.., I]
    gate, up = h.split(h.shape[-1] // 2, dim=-1)
    return F.silu(gate) * up


def _gathered(x, top_idx, top_w, gate_up, down):
    N, k = top_idx.shape
    idx = top_idx.reshape(-1)  # [N*k]
    xk = x.repeat_interleave(k, dim=0)[:, :, None]  # [N*k, H, 1]
    h = torch.bmm(gate_up[idx], xk).squeeze(-1)  # [N*k, 2I]
    y = torch.bmm(down[idx], _swiglu(h)[:, :, None]).squeeze(-1)  # [N*k, H]
    return (y.view(N, k, -1) * top_w.to(y.dtype)[:, :, None]).sum(1)


def _host_loop(x, top_idx, top_w, gate_up, down):
    rows = []
    # rows stay 2-D ([1, H]): a 1-D F.linear takes torch.mv, several times slower on CPU
    for xn, experts, weights in zip(x.split(1), top_idx.tolist(), top_w.tolist()):
        acc = None
        for e, wt in zip(experts, weights):
            y = F.linear(_swiglu(F.linear(xn, gate_up[e])), down[e]) * wt
            acc = y if acc is None else acc + y
        rows.append(acc)
    return torch.cat(rows) if len(rows) > 1 else rows[0]


def _grouped(x, top_idx, top_w, gate_up, down):
    N, k = top_idx.shape
    E = gate_up.shape[0]
    flat = top_idx.reshape(-1)
    order = flat.argsort(stable=True)  # assignments sorted by expert
    offsets = expert_counts(flat, E).cumsum(0).to(torch.int32)  # [E] end of each expert's rows
    xs = x[order // k]  # [N*k, H]: the source token of each sorted assignment
    h = _swiglu(grouped_mm(xs, gate_up, offsets)).contiguous()  # [N*k, I]
    y = grouped_mm(h, down, offsets)  # [N*k, H], sorted by expert
    # un-sort with a gather (inverse permutation) and mix the k outputs of each token:
    # deterministic, unlike index_add_ (atomics on GPU)
    y = y[order.argsort()].view(N, k, -1)  # [N, k, H] in (token, choice) order
    return (y * top_w.to(y.dtype)[:, :, None]).sum(dim=1)


def expert_counts(flat_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Assignments per expert [E] (long). bincount on CPU; on accelerators histc,
    which needs no device-to-host sync (bincount must first find the max)."""
    if flat_idx.device.type == "cpu":
        return torch.bincount(flat_idx, minlength=num_experts)
    return torch.histc(flat_idx.float(), bins=num_experts, min=0, max=num_experts).long()


# ---------------------------------------------------------------- grouped matmul


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous:
    `_grouped_mm`'s backward rejects expanded (stride-0) gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.contiguous()


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows of x grouped by expert (contiguous; group e ends at offsets[e]) times w[e]^T.
    x [N, K], w [E, M, K], offsets [E] int32 -> [N, M]."""
    if x.dtype != torch.bfloat16 and torch.compiler.is_compiling():
        # _grouped_mm's compile-time (meta) kernel accepts only bf16, and the padded fallback
        # sizes a buffer from the data: run this one op eagerly, the rest of the layer compiled
        return _grouped_mm_eager(x, w, offsets)
    return _grouped_mm_dispatch(x, w, offsets)


def _aligned(t: torch.Tensor, *dims: int) -> bool:
    return all((d * t.element_size()) % 16 == 0 for d in dims)


def _grouped_mm_dispatch(x, w, offsets):
    E, M, K = w.shape
    key = (x.device.type, x.dtype)
    if hasattr(torch, "_grouped_mm") and _grouped_mm_ok.get(key, True) and _aligned(x, K, M):
        try:
            y = torch._grouped_mm(x, w.transpose(-2, -1), offs=offsets)
            _grouped_mm_ok[key] = True
            return _ContiguousGrad.apply(y) if torch.is_grad_enabled() else y
        except (RuntimeError, NotImplementedError):
            _grouped_mm_ok[key] = False  # e.g. float32 on GPUs whose kernel is bf16-only
    return padded_bmm(x, w, offsets)


_grouped_mm_eager = torch.compiler.disable(_grouped_mm_dispatch)


def padded_bmm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """grouped_mm by scattering rows into [E, C, K] (C = the largest group), one bmm, and
    gathering back: plain PyTorch, any dtype and device (one host sync for C)."""
    E, M, K = w.shape
    N = x.shape[0]
    counts = torch.diff(offsets.long(), prepend=offsets.new_zeros(1).long())  # [E]
    cap = int(counts.max()) if N else 0
    expert = torch.repeat_interleave(torch.arange(E, device=x.device), counts, output_size=N)
    rank = torch.arange(N, device=x.device) - (offsets.long() - counts)[expert]  # row within its group
    buf = x.new_zeros(E, max(cap, 1), K)
    buf[expert, rank] = x
    out = torch.bmm(buf, w.transpose(-2, -1))  # [E, C, M]
    return out[expert, rank]


# ---------------------------------------------------------------- reference


def moe_experts_reference(x, top_idx, top_w, gate_up, down) -> torch.Tensor:
    """The definition, one token and one chosen expert at a time."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(top_idx.shape[1]):
            e = int(top_idx[n, j])
            y = down[e] @ _swiglu(gate_up[e] @ x[n])
            out[n] = out[n] + top_w[n, j].to(y.dtype) * y
    return out


def grouped_mm_reference(x, w, offsets) -> torch.Tensor:
    """One matmul per group."""
    start, out = 0, []
    for e, end in enumerate(offsets.tolist()):
        out.append(x[start:end] @ w[e].t())
        start = end
    return torch.cat(out)
