"""ops.moe: every expert path (grouped with torch._grouped_mm, grouped with the padded bmm
fallback, gathered, host loop) against the per-token reference loop, in values and gradients."""

import pytest
import torch

from opens1.ops import moe


def _weights(E, H, I, seed=0):
    torch.manual_seed(seed)
    return torch.randn(E, 2 * I, H), torch.randn(E, H, I)


def _routing(N, E, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(N)])
    return idx, torch.rand(N, k, generator=g)


@pytest.mark.parametrize("hidden,inter", [(16, 8), (6, 5)])  # (6, 5) is misaligned: padded fallback
def test_grouped_path_matches_reference_with_gradients(hidden, inter):
    gu, dn = _weights(4, hidden, inter)
    x = torch.randn(9, hidden, requires_grad=True)
    idx, w = _routing(9, 4, 2)
    idx[:, 0] = 1  # expert 1 takes every token, another probably none: uneven groups
    got = moe.moe_experts(x, idx, w, gu, dn)  # grad mode: grouped
    ref = moe.moe_experts_reference(x, idx, w, gu, dn)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    gx, = torch.autograd.grad(got.sum(), x)  # sum() gives a stride-0 gradient
    rx, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gx, rx, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("N", [1, 2, 3, 9])  # 1-2 tokens: host loop on CPU; more: grouped
def test_inference_paths_match_reference(N):
    gu, dn = _weights(8, 16, 8, seed=N)
    x = torch.randn(N, 16)
    idx, w = _routing(N, 8, 2, seed=N)
    ref = moe.moe_experts_reference(x, idx, w, gu, dn)
    with torch.no_grad():
        torch.testing.assert_close(moe.moe_experts(x, idx, w, gu, dn), ref, atol=1e-4, rtol=1e-4)
        for path in (moe._gathered, moe._host_loop, moe._grouped):
            torch.testing.assert_close(path(x, idx, w, gu, dn), ref, atol=1e-4, rtol=1e-4)


def test_grouped_mm_and_padded_fallback_match_reference():
    torch.manual_seed(1)
    w = torch.randn(3, 8, 16)
    x = torch.randn(7, 16)
    offs = torch.tensor([5, 5, 7], dtype=torch.int32)  # groups of 5, 0 and 2 rows
    ref = moe.grouped_mm_reference(x, w, offs)
    torch.testing.assert_close(ref, torch.cat([x[:5] @ w[0].T, x[5:] @ w[2].T]))
    torch.testing.assert_close(moe.padded_bmm(x, w, offs), ref)
    torch.testing.assert_close(moe.grouped_mm(x, w, offs), ref)


def test_grouped_mm_unavailable_falls_back(monkeypatch):
    # a device/dtype where torch._grouped_mm failed once is remembered and served by the fallback
    monkeypatch.setitem(moe._grouped_mm_ok, ("cpu", torch.float32), False)
    gu, dn = _weights(4, 16, 8)
    x = torch.randn(5, 16, requires_grad=True)
    idx, w = _routing(5, 4, 2)
    torch.testing.assert_close(moe.moe_experts(x, idx, w, gu, dn), moe.moe_experts_reference(x, idx, w, gu, dn),
                               atol=1e-4, rtol=1e-4)


def test_gathered_path_compiles_without_graph_breaks():
    # what compiled decode runs: one graph, no host sync
    gu, dn = _weights(8, 16, 8)
    x = torch.randn(2, 16)
    idx, w = _routing(2, 8, 2)
    f = torch.compile(moe.moe_experts, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(f(x, idx, w, gu, dn), moe.moe_experts_reference(x, idx, w, gu, dn),
                                   atol=1e-4, rtol=1e-4)
