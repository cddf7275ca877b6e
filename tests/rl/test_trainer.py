"""The RL loop end to end on a tiny random model: rollouts, rewards, filtering, update, weight sync."""

import pytest
import torch

from opens1.models.s1 import S1ForConditionalGeneration
from opens1.rl.algorithms import RLLossConfig
from opens1.infer.sampling import SamplingParams
from opens1.rl.rollout import LocalEngine
from opens1.rl.trainer import RLConfig, RLTrainer, freeze_for_rl


def test_weight_sync_between_trainer_and_engine(parts):
    tok, proc, model = parts
    engine = LocalEngine(model, pad_token_id=tok.pad_token_id)
    prompt = proc([{"role": "user", "content": "Sort 3, 1, 2."}], enable_thinking=False)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    before = engine.generate([prompt], 1, greedy)[0][0].response_ids
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    # the engine holds its own copy: unchanged until the trainer pushes weights
    assert engine.generate([prompt], 1, greedy)[0][0].response_ids == before
    engine.update_weights(model.state_dict())
    assert engine.version == 1
    for (k, a), b in zip(engine.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    ref = model.generate(prompt["input_ids"], max_new_tokens=6, temperature=0.0)[0, prompt["input_ids"].shape[1]:]
    # no eos given: all 6 tokens come back, the same as the trainer's own greedy decode
    assert engine.generate([prompt], 1, greedy)[0][0].response_ids == ref.tolist()


def test_freeze_router_and_vision(parts):
    _, _, model = parts
    m = S1ForConditionalGeneration(model.config)
    n = freeze_for_rl(m)
    frozen = {k for k, p in m.named_parameters() if not p.requires_grad}
    assert n == len(frozen) > 0
    assert any(k.startswith("vision_tower.") for k in frozen)
    assert any(k.startswith("ts_tower.") for k in frozen) and any(k.startswith("ts_projector.") for k in frozen)
    assert any(k.endswith("mlp.gate.weight") for k in frozen)
    assert not any(k.startswith("language_model.embed") for k in frozen)
    m2 = S1ForConditionalGeneration(model.config)
    freeze_for_rl(m2, timeseries=False)
    assert all(p.requires_grad for k, p in m2.named_parameters() if k.startswith("ts_tower."))


def test_frozen_towers_stay_in_eval_mode_during_updates(parts):
    tok, proc, model = parts
    m = S1ForConditionalGeneration(model.config)
    m.load_state_dict(model.state_dict())
    trainer = RLTrainer(m, tok, proc, RLConfig(envs=["logic/counting"], prompts_per_step=1, rollouts_per_prompt=2,
                                               max_new_tokens=4))
    trainer._train_mode()
    assert m.language_model.training
    assert not m.ts_tower.training and not m.vision_tower.training  # dropout off in frozen towers


@pytest.mark.parametrize("algorithm", ["oreal", "grpo"])
def test_rl_steps_run_and_log(parts, tmp_path, algorithm):
    tok, proc, model = parts
    m = S1ForConditionalGeneration(model.config)
    m.load_state_dict(model.state_dict())
    cfg = RLConfig(envs=["logic/counting", "bio/gc_content"], prompts_per_step=2, rollouts_per_prompt=4,
                   max_new_tokens=6, heldout_items=4, loss=RLLossConfig(algorithm=algorithm))
    trainer = RLTrainer(m, tok, proc, cfg, log_path=tmp_path / "rl.jsonl")
    before = trainer.heldout_reward()
    assert before.items == 4 and 0.0 <= before.reward <= 1.0
    res = trainer.train(steps=2)
    assert res.steps == 2 and len(res.history) == 2
    for h in res.history:
        assert 0.0 <= h["reward_mean"] <= 1.0 and h["kept_groups"] >= 0 and h["response_len"] > 0
    assert (tmp_path / "rl.jsonl").read_text().count("\n") == 2


def test_degenerate_groups_skip_the_update(parts, monkeypatch):
    tok, proc, model = parts
    m = S1ForConditionalGeneration(model.config)
    m.load_state_dict(model.state_dict())
    trainer = RLTrainer(m, tok, proc, RLConfig(envs=["logic/counting"], prompts_per_step=2,
                                               rollouts_per_prompt=3, max_new_tokens=4))
    monkeypatch.setattr(trainer, "_score", lambda *a, **k: 0.0)  # every rollout wrong: all groups degenerate
    snapshot = {k: v.clone() for k, v in m.state_dict().items()}
    h = trainer.step()
    assert h["kept_groups"] == 0 and "entropy" not in h
    assert all(torch.equal(snapshot[k], v) for k, v in m.state_dict().items())


def test_mixture_of_rewards_routes_sources(parts):
    tok, proc, model = parts
    mixture = {"sources": {"logic/*": {"verifier": "env", "weight": 0.5}}}
    tr = RLTrainer(model, tok, proc, RLConfig(envs=["logic/counting"], rewards=mixture))
    case = tr.envs["logic/counting"].case(0, split="train")
    from opens1.rl.rollout import Rollout

    right = Rollout([], tok.encode(f"Answer: {case.reference}"), finished=False)
    assert tr._score("logic/counting", case, right) == 0.5  # env verifier x weight
    with pytest.raises(ValueError, match="no reward rule"):
        RLTrainer(model, tok, proc, RLConfig(envs=["bio/gc_content"], rewards=mixture))


def test_heldout_cases_are_a_fixed_prefix_when_an_env_runs_out(parts):
    # ECG has 24 held-out cases: a count returned by one pass must select exactly the same
    # items in the next (the RL stage scores before and after on the same items)
    tok, proc, model = parts
    trainer = RLTrainer(model, tok, proc, RLConfig(envs=["logic/counting", "ecg/beat_label"], max_new_tokens=4))
    assert trainer.envs["ecg/beat_label"].num_cases("heldout") < 40
    long = trainer.heldout_cases(80)
    assert len(long) == 80
    assert [n for n, _ in long[:6]] == ["logic/counting", "ecg/beat_label"] * 3  # interleaved
    for k in (5, 48, 61, 80):
        short = trainer.heldout_cases(k)
        assert [(n, c.id) for n, c in short] == [(n, c.id) for n, c in long[:k]]


def test_heldout_reward_per_env_breakdown(parts):
    tok, proc, model = parts
    trainer = RLTrainer(model, tok, proc, RLConfig(envs=["logic/counting", "bio/gc_content"], max_new_tokens=4))
    r = trainer.heldout_reward(items=6)
    mean, n, by = r.reward, r.items, r.by_env
    assert {k: v["items"] for k, v in by.items()} == {"logic/counting": 3, "bio/gc_content": 3}
    assert abs(sum(v["reward"] * v["items"] for v in by.values()) / n - mean) < 1e-9


def test_answer_prior_reward_is_the_most_common_answers_share(parts):
    # logic/counting is verified exactly: always giving the most common reference scores
    # exactly that reference's share of the slice (ties between references aside)
    from collections import Counter

    tok, proc, model = parts
    trainer = RLTrainer(model, tok, proc, RLConfig(envs=["logic/counting", "ecg/beat_label"], max_new_tokens=4))
    p = trainer.answer_prior_reward(60)
    mean, by = p.reward, p.by_env
    cases = trainer.heldout_cases(60)
    for env in ("logic/counting", "ecg/beat_label"):
        refs = Counter(repr(c.reference) for n, c in cases if n == env)
        assert by[env]["items"] == sum(refs.values())
        assert by[env]["reward"] == pytest.approx(refs.most_common(1)[0][1] / sum(refs.values()))
    assert mean == pytest.approx(sum(v["reward"] * v["items"] for v in by.values()) / 60)


def test_partial_credit_only_in_training_rewards(parts):
    from opens1.rl.rollout import Rollout
    from opens1.rl.trainer import numeric_closeness

    tok, proc, model = parts
    tr = RLTrainer(model, tok, proc, RLConfig(envs=["chem/atom_count"], partial_credit=0.5))
    case = next(c for c in (tr.envs["chem/atom_count"].case(i, split="train") for i in range(50)) if c.reference == "4")

    def reply(text):
        return Rollout([], tok.encode(text), finished=False)

    assert tr._score("chem/atom_count", case, reply("Answer: 4"), train=True) == 1.0
    assert tr._score("chem/atom_count", case, reply("Answer: 3"), train=True) == pytest.approx(0.5 * 0.75)
    assert tr._score("chem/atom_count", case, reply("Answer: 9"), train=True) == 0.0  # farther than the reference
    assert tr._score("chem/atom_count", case, reply("Answer: many"), train=True) == 0.0
    assert tr._score("chem/atom_count", case, reply("Answer: 3")) == 0.0  # held-out scoring stays exact
    assert numeric_closeness(type("R", (), {"extracted": "0"})(), case) == 0.0
    assert numeric_closeness(type("R", (), {"extracted": "1,000"})(), type("C", (), {"reference": "1000"})()) == 1.0


def test_dynamic_sampling_draws_until_groups_have_mixed_rewards(parts, monkeypatch):
    tok, proc, model = parts
    m = S1ForConditionalGeneration(model.config)
    m.load_state_dict(model.state_dict())
    tr = RLTrainer(m, tok, proc, RLConfig(envs=["logic/counting"], prompts_per_step=2, rollouts_per_prompt=2,
                                          max_new_tokens=2, sample_rounds=4))
    # groups in draw order: uniform, uniform | mixed, uniform | mixed, mixed | (never drawn)
    pattern = iter([0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1])
    monkeypatch.setattr(tr, "_score", lambda *a, **k: float(next(pattern)))
    cases, groups, rewards, keep, drawn = tr._sample_groups()
    assert drawn == 6 and rewards.shape == (6, 2)
    assert keep.tolist() == [False, False, True, False, True, False]  # the first 2 mixed groups only
    tr.cfg.sample_rounds = 1  # off: one round, whatever its groups
    pattern = iter([0, 0, 1, 1])
    _, _, rewards, keep, drawn = tr._sample_groups()
    assert drawn == 2 and keep.tolist() == [False, False]
