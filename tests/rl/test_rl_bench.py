"""Entropy control as the RL bench measures it: KL-Cov in OREAL covers the behaviour-cloned
tokens, it acts only once the policy has moved off the rollout policy (mini-batch updates),
and the bench's statistics helpers are right."""

import importlib.util
import itertools
import math
from pathlib import Path

import pytest
import torch

from opens1.models.s1 import S1ForConditionalGeneration
from opens1.rl.algorithms import RLLossConfig, oreal_loss
from opens1.rl.trainer import RLConfig, RLTrainer

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl_entropy.py"


def _bench():
    spec = importlib.util.spec_from_file_location("rl_entropy_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_oreal_kl_cov_selects_confident_correct_tokens():
    # row 0 correct (A > 0) with one confident token; row 1 wrong (A < 0)
    logp = torch.log(torch.tensor([[0.9, 0.2], [0.3, 0.3]])).requires_grad_()
    old = logp.detach() - 0.1  # the policy moved: |logp - old| = 0.1 everywhere
    adv, correct, mask = torch.tensor([1.0, -1.0]), torch.tensor([True, False]), torch.ones(2, 2)
    cfg = RLLossConfig(algorithm="oreal", entropy_control="kl_cov", kl_cov_ratio=0.25, kl_cov_coef=2.0)
    base = oreal_loss(logp, old, adv, correct, mask, RLLossConfig(algorithm="oreal", entropy_control="none"))
    out = oreal_loss(logp, old, adv, correct, mask, cfg)
    # the top-covariance token is the confident token of the correct row (A above mean, logp above mean)
    assert out.metrics["kl_cov_pos_frac"] == 1.0 and out.metrics["kl_cov_frac"] == 0.25
    assert out.loss.item() == pytest.approx(base.loss.item() + 2.0 * 0.1 / 4, abs=1e-6)


def test_oreal_kl_cov_has_no_gradient_on_policy():
    logp = torch.log(torch.tensor([[0.9, 0.2], [0.3, 0.3]])).requires_grad_()
    adv, correct, mask = torch.tensor([1.0, -1.0]), torch.tensor([True, False]), torch.ones(2, 2)
    grads = []
    for control in ("none", "kl_cov"):
        logp.grad = None
        oreal_loss(logp, logp.detach(), adv, correct, mask, RLLossConfig(entropy_control=control)).loss.backward()
        grads.append(logp.grad.clone())
    # |logp - old| has zero gradient at logp == old: KL-Cov needs an off-policy (second) update
    assert torch.equal(grads[0], grads[1])


def _one_step(parts, control: str, mini_batches: int) -> dict:
    tok, proc, model = parts
    m = S1ForConditionalGeneration(model.config)
    m.load_state_dict(model.state_dict())
    cfg = RLConfig(envs=["logic/counting"], prompts_per_step=2, rollouts_per_prompt=4, max_new_tokens=6,
                   lr=1e-2, mini_batches=mini_batches, seed=3,
                   loss=RLLossConfig(entropy_control=control, kl_cov_ratio=0.2, kl_cov_coef=5.0))
    trainer = RLTrainer(m, tok, proc, cfg)
    flip = itertools.cycle([1.0, 0.0])  # mixed outcomes in every group, independent of the text
    trainer._score = lambda *a, **k: next(flip)
    metrics = trainer.step()
    assert metrics["kept_groups"] == 2
    return {k: v.clone() for k, v in m.state_dict().items()}, metrics


@pytest.mark.slow
def test_kl_cov_acts_only_with_mini_batch_updates(parts):
    one_none, _ = _one_step(parts, "none", 1)
    one_kl, _ = _one_step(parts, "kl_cov", 1)
    assert all(torch.equal(one_none[k], one_kl[k]) for k in one_none)  # one on-policy update: no effect
    two_none, _ = _one_step(parts, "none", 2)
    two_kl, metrics = _one_step(parts, "kl_cov", 2)
    assert metrics["kl_cov_frac"] > 0
    assert any(not torch.equal(two_none[k], two_kl[k]) for k in two_none)  # second update is off-policy


def test_bench_standard_error_and_table(capsys):
    bench = _bench()
    assert bench.se_diff(0.5, 0.5, 100) == pytest.approx(math.sqrt(0.5 / 100))
    assert bench.se_diff(0.0, 1.0, 10) == 0.0
    results = [{"arm": arm, "seed": 0, "heldout_before": 0.3, "heldout_after": after, "heldout_items": 100,
                "heldout_sampled_before": 0.2, "heldout_sampled_after": after - 0.1,
                "probe_entropy": [(0, 1.0), (2, h)], "rollout_entropy": [1.0, h],
                "reward": [0.2, 0.3], "kept_groups": [1, 1], "kl_cov_frac": [None, None]}
               for arm, after, h in (("kl_cov", 0.4, 0.8), ("none", 0.35, 0.4))]

    class A:
        steps, probe_every, temperature = 2, 2, 1.0

    bench.print_tables(results, A)
    out = capsys.readouterr().out
    assert "kl_cov" in out and "2.00" in out  # entropy ratio 0.8 / 0.4 against the `none` arm


def test_sampled_heldout_reward_is_reproducible(parts):
    # the bench compares sampled held-out reward before/after RL: the same items and the same
    # sampling noise on both sides, so only the policy differs
    tok, proc, model = parts
    trainer = RLTrainer(model, tok, proc, RLConfig(envs=["logic/counting"], max_new_tokens=4))
    a = trainer.heldout_reward(items=4, temperature=1.0)
    assert a == trainer.heldout_reward(items=4, temperature=1.0) and a.items == 4
