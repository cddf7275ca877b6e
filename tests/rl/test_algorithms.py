"""RL losses against hand-computed values."""

import math

import pytest
import torch

from opens1.rl.algorithms import (
    RLLossConfig,
    aggregate,
    clip_cov_select,
    degenerate_groups,
    grpo_loss,
    group_advantages,
    kl_cov_select,
    oreal_loss,
    ref_kl_term,
    token_covariance,
)


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    adv = group_advantages(r, eps=0.0)
    # group 0: mean 0.5, std 0.5 -> +-1; group 1: mean 0.75, std sqrt(3)/4
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]))
    s = math.sqrt(3) / 4
    assert torch.allclose(adv[1], torch.tensor([0.25 / s, 0.25 / s, 0.25 / s, -0.75 / s]))
    assert torch.allclose(group_advantages(r, scale=False)[1], torch.tensor([0.25, 0.25, 0.25, -0.75]))


def test_degenerate_groups_dropped():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    assert degenerate_groups(r).tolist() == [True, True, False, True]


def test_aggregation_modes():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    with pytest.raises(ValueError):
        aggregate(loss, mask, "bogus")


def test_grpo_clipping_by_hand():
    cfg = RLLossConfig(algorithm="grpo", entropy_control="none", clip_eps_low=0.2, clip_eps_high=0.2)
    # one token per response; ratios 1.5 (positive advantage) and 0.5 (negative advantage)
    old = torch.zeros(2, 1)
    logp = torch.log(torch.tensor([[1.5], [0.5]])).requires_grad_()
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(logp, old, adv, torch.ones(2, 1), cfg)
    # token 0: max(-1*1.5, -1*1.2) = -1.2 ; token 1: max(1*0.5, 1*0.8) = 0.8 ; mean = -0.2
    assert out.loss.item() == pytest.approx(-0.2, abs=1e-6)
    out.loss.backward()
    # both tokens are clipped: no gradient flows
    assert torch.allclose(logp.grad, torch.zeros(2, 1))
    assert out.metrics["clip_frac"] == pytest.approx(1.0)


def test_grpo_unclipped_gradient_is_minus_advantage():
    cfg = RLLossConfig(algorithm="grpo", entropy_control="none")
    logp = torch.zeros(1, 2, requires_grad=True)
    out = grpo_loss(logp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2), cfg)
    out.loss.backward()
    # d/dlogp of -A*exp(logp - old) at ratio 1 = -A, averaged over 2 tokens
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -1.0]]))


def test_oreal_bc_on_correct_pg_on_wrong():
    cfg = RLLossConfig(algorithm="oreal", entropy_control="none", sft_coef=1.0, pg_coef=0.5)
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.8, 0.8]])).requires_grad_()
    old = logp.detach().clone()
    correct = torch.tensor([True, False])
    adv = torch.tensor([1.0, -2.0])
    out = oreal_loss(logp, old, adv, correct, torch.ones(2, 2), cfg)
    bc = -(math.log(0.5) + math.log(0.25)) / 2
    pg = (2.0 + 2.0) / 2  # -A * ratio(=1) on both wrong tokens
    assert out.loss.item() == pytest.approx(bc + 0.5 * pg, rel=1e-6)
    out.loss.backward()
    # BC gradient on the correct row: -1/2 per token; PG on the wrong row: -A*ratio*0.5/2 = +0.5
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5], [0.5, 0.5]]))


def test_token_covariance_and_kl_cov_selection():
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    logp = torch.tensor([[-0.1, -2.0], [-0.1, -2.0]])
    mask = torch.ones(2, 2)
    cov = token_covariance(adv, logp, mask)
    # mean A = 0, mean logp = -1.05: cov = A * (logp + 1.05)
    assert torch.allclose(cov, torch.tensor([[0.95, -0.95], [-0.95, 0.95]]))
    sel = kl_cov_select(cov, mask, ratio=0.25)
    # exactly one token, one of the two tied at the top covariance
    assert sel.sum() == 1 and (sel[0, 0] or sel[1, 1])
    assert kl_cov_select(cov, mask, ratio=0.5).tolist() == [[True, False], [False, True]]


def test_kl_cov_penalty_added_only_on_selected_tokens():
    cfg = RLLossConfig(algorithm="grpo", entropy_control="kl_cov", kl_cov_ratio=0.25, kl_cov_coef=1.0,
                       clip_eps_low=10, clip_eps_high=10)
    old = torch.zeros(2, 2)
    logp = torch.tensor([[0.1, -0.2], [0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    base = grpo_loss(logp, old, adv, torch.ones(2, 2), RLLossConfig(algorithm="grpo", entropy_control="none",
                                                                     clip_eps_low=10, clip_eps_high=10))
    out = grpo_loss(logp, old, adv, torch.ones(2, 2), cfg)
    cov = token_covariance(adv.unsqueeze(-1).expand(2, 2), logp, torch.ones(2, 2))
    sel = kl_cov_select(cov, torch.ones(2, 2), 0.25)
    extra = (sel * logp.abs()).sum() / 4
    assert out.loss.item() == pytest.approx(base.loss.item() + extra.item(), abs=1e-6)
    assert out.metrics["kl_cov_frac"] == pytest.approx(0.25)


def test_clip_cov_detaches_selected_tokens():
    cov = torch.tensor([[2.0, 0.5], [3.0, 10.0]])
    mask = torch.ones(2, 2)
    sel = clip_cov_select(cov, mask, ratio=0.5, lb=1.0, ub=5.0, generator=torch.Generator().manual_seed(0))
    assert sel.sum() == 2 and sel[0, 0] and sel[1, 0] and not sel[1, 1]


def test_ref_kl_k3_is_zero_at_equality_and_positive_otherwise():
    lp = torch.tensor([[-1.0, -2.0]])
    assert torch.allclose(ref_kl_term(lp, lp), torch.zeros(1, 2))
    assert (ref_kl_term(lp, lp + 0.3) > 0).all()


def test_bad_config_is_clear_error():
    with pytest.raises(ValueError, match="unknown RL algorithm"):
        RLLossConfig(algorithm="ppo2")
