"""The MoE block: the router's top-k renormalisation, the experts module calling the ops
kernels (tests/ops/test_moe.py checks every kernel path against the reference loop), and
the aux loss ignoring padding."""

import torch

from opens1.config import TextConfig
from opens1.models.moe import Experts, SparseMoeBlock, load_balancing_loss
from opens1.ops.moe import moe_experts_reference


def test_experts_module_matches_reference_loop():
    torch.manual_seed(0)
    ex = Experts(4, 16, 8)
    torch.nn.init.normal_(ex.gate_up_proj)
    torch.nn.init.normal_(ex.down_proj)
    x = torch.randn(9, 16)
    idx = torch.stack([torch.randperm(4)[:2] for _ in range(9)])
    w = torch.rand(9, 2)
    ref = moe_experts_reference(x, idx, w, ex.gate_up_proj, ex.down_proj)
    torch.testing.assert_close(ex(x, idx, w), ref, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(ex(x[:1], idx[:1], w[:1]), ref[:1], atol=1e-4, rtol=1e-4)  # decode-sized


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


def test_aux_loss_ignores_padding_rows():
    torch.manual_seed(0)
    logits = [torch.randn(5, 4), torch.randn(5, 4)]
    mask = torch.tensor([1, 1, 1, 0, 0])
    padded = [torch.cat([lg[:3], 100 * torch.randn(2, 4)]) for lg in logits]  # garbage on padding
    torch.testing.assert_close(load_balancing_loss(padded, 2, mask), load_balancing_loss([lg[:3] for lg in logits], 2))
