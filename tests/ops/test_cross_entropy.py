"""ops.linear_cross_entropy / linear_log_probs against the unfused F.linear + F.cross_entropy:
values, gradients (float64 gradcheck), several chunks, zero-weight rows, and bf16 autocast."""

import pytest
import torch

from opens1.ops import cross_entropy as ce


def _data(N, H, V, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    h = torch.randn(N, H, dtype=dtype, requires_grad=True)
    w = torch.randn(V, H, dtype=dtype, requires_grad=True)
    t = torch.randint(0, V, (N,))
    return h, w, t


def test_weighted_sum_and_gradients_match_reference():
    h, w, t = _data(2 * ce.CHUNK + 37, 16, 23)  # three chunks, the last one short
    weight = torch.rand(h.shape[0], dtype=torch.float64)
    weight[::5] = 0.0
    t[::5] = -100  # zero-weight rows may carry an ignored target
    got = ce.linear_cross_entropy(h, w, t, weight)
    ref = ce.linear_cross_entropy_reference(h, w, t, weight)
    torch.testing.assert_close(got, ref)
    for a, b in zip(torch.autograd.grad(got, (h, w)), torch.autograd.grad(ref, (h, w))):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # the no-grad path forms no gradients
        torch.testing.assert_close(ce.linear_cross_entropy(h, w, t, weight), ref.detach())


def test_gradcheck():
    h, w, t = _data(7, 5, 11)
    weight = torch.rand(7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h, w: ce.linear_cross_entropy(h, w, t, weight), (h, w))
    assert torch.autograd.gradcheck(lambda h, w: ce.linear_log_probs(h, w, t)[0], (h, w))


def test_log_probs_entropy_and_gradients_match_reference():
    h, w, t = _data(ce.CHUNK + 9, 8, 13, seed=1)
    logp, ent = ce.linear_log_probs(h, w, t)
    ref_lp, ref_ent = ce.linear_log_probs_reference(h, w, t)
    torch.testing.assert_close(logp, ref_lp)
    torch.testing.assert_close(ent, ref_ent)
    assert not ent.requires_grad  # a statistic
    up = torch.randn(h.shape[0], dtype=torch.float64)  # a nonlinear loss gives each token its own weight
    for a, b in zip(torch.autograd.grad((logp * up).sum(), (h, w)), torch.autograd.grad((ref_lp * up).sum(), (h, w))):
        torch.testing.assert_close(a, b)


def test_log_probs_by_hand():
    # one row whose logits are log([0.5, 0.25, 0.25]) (h = 1, w = those logits)
    w = torch.log(torch.tensor([[0.5], [0.25], [0.25]]))
    logp, ent = ce.linear_log_probs(torch.ones(1, 1), w, torch.tensor([1]))
    assert logp.item() == pytest.approx(torch.log(torch.tensor(0.25)).item())
    assert ent.item() == pytest.approx(-(0.5 * torch.log(torch.tensor(0.5)) + 0.5 * torch.log(torch.tensor(0.25))).item())


def test_under_bf16_autocast():
    # the head's matmuls in bf16 like nn.Linear's, softmax and loss in float32, gradients reach
    # the float32 weight; it must agree with the unfused bf16 computation
    torch.manual_seed(2)
    N = ce.CHUNK + 50  # two chunks: grad_w is summed across them
    h = torch.randn(N, 32, requires_grad=True)
    w = (0.1 * torch.randn(97, 32)).requires_grad_()
    t = torch.randint(0, 97, (N,))
    weight = torch.ones(N)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ce.linear_cross_entropy(h, w, t, weight)
        logits = h @ w.t()  # autocast: bf16
        lp, _ = ce.linear_log_probs(h, w, t)
    ref = torch.nn.functional.cross_entropy(logits.float(), t, reduction="sum")
    ref_lp = torch.log_softmax(logits.float(), -1).gather(1, t[:, None]).squeeze(1)
    assert got.dtype == torch.float32 and lp.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(lp, ref_lp, rtol=1e-3, atol=1e-3)
    for a, b in zip(torch.autograd.grad(got, (h, w)), torch.autograd.grad(ref, (h, w))):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-2)
