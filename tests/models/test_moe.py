"""The grouped-expert MoE block: both grouped paths (torch._grouped_mm and the padded
bmm fallback) against a plain per-expert loop, in values and gradients."""

import pytest
import torch

from opens1.config import TextConfig
from opens1.models import moe
from opens1.models.moe import Experts, SparseMoeBlock, _padded_bmm, grouped_matmul


def loop_reference(ex: Experts, x, idx, w):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = idx[n, j]
            g, u = (ex.gate_up_proj[e] @ x[n]).chunk(2)
            out[n] += w[n, j] * (ex.down_proj[e] @ (torch.nn.functional.silu(g) * u))
    return out


@pytest.mark.parametrize("hidden,inter", [(16, 8), (6, 5)])  # (6, 5) is misaligned: fallback path
def test_experts_match_loop(hidden, inter):
    torch.manual_seed(0)
    ex = Experts(4, hidden, inter)
    torch.nn.init.normal_(ex.gate_up_proj)
    torch.nn.init.normal_(ex.down_proj)
    x = torch.randn(9, hidden, requires_grad=True)
    idx = torch.stack([torch.randperm(4)[:2] for _ in range(9)])
    idx[:, 0] = 1  # expert 1 takes every token, expert 3 probably none: uneven groups
    w = torch.rand(9, 2)
    got = ex(x, idx, w)
    ref = loop_reference(ex, x, idx, w)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    gx, = torch.autograd.grad(got.sum(), x)  # sum() gives a stride-0 gradient
    rx, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gx, rx, atol=1e-4, rtol=1e-4)


def test_padded_fallback_equals_grouped():
    torch.manual_seed(1)
    w = torch.randn(3, 8, 16)
    counts = torch.tensor([5, 0, 2])
    x = torch.randn(7, 16)
    offs = counts.cumsum(0).to(torch.int32)
    a = _padded_bmm(x, w, offs, counts)
    b = torch.cat([x[:5] @ w[0].T, x[5:] @ w[2].T])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(grouped_matmul(x, w, offs, counts), b)


def test_router_renormalises_top_k():
    t = TextConfig(hidden_size=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=4, norm_topk_prob=True)
    block = SparseMoeBlock(t)
    captured = {}
    orig = block.experts.forward

    def spy(x, idx, w):
        captured["w"] = w
        return orig(x, idx, w)

    block.experts.forward = spy
    torch.nn.init.normal_(block.experts.gate_up_proj)
    torch.nn.init.normal_(block.experts.down_proj)
    out, logits = block(torch.randn(2, 3, 8))
    assert out.shape == (2, 3, 8) and logits.shape == (6, 4)
    torch.testing.assert_close(captured["w"].sum(-1), torch.ones(6))


def test_grouped_mm_disabled_still_works(monkeypatch):
    monkeypatch.setitem(moe._GROUPED_MM_OK, ("cpu", torch.float32), False)
    torch.manual_seed(0)
    ex = Experts(4, 16, 8)
    torch.nn.init.normal_(ex.gate_up_proj)
    torch.nn.init.normal_(ex.down_proj)
    x = torch.randn(5, 16)
    idx = torch.tensor([[0, 1], [1, 2], [3, 0], [0, 2], [1, 3]])
    w = torch.rand(5, 2)
    torch.testing.assert_close(ex(x, idx, w), loop_reference(ex, x, idx, w), atol=1e-4, rtol=1e-4)


def test_cpu_decode_path_equals_grouped():
    torch.manual_seed(0)
    ex = Experts(8, 16, 8)
    torch.nn.init.normal_(ex.gate_up_proj)
    torch.nn.init.normal_(ex.down_proj)
    x = torch.randn(3, 16)
    idx = torch.tensor([[0, 5], [5, 7], [2, 1]])
    w = torch.rand(3, 2)
    grouped = ex(x, idx, w)  # grad mode on: grouped path
    with torch.no_grad():
        small = ex(x, idx, w)  # 6 assignments on CPU without grad: per-assignment path
    torch.testing.assert_close(small, grouped, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(small, loop_reference(ex, x, idx, w), atol=1e-4, rtol=1e-4)
