"""The training loop: resume equivalence, guards, SIGTERM, wall-clock budget, export."""

import json
import os
import signal

import pytest
import torch

from opens1.data.packing import PackedStream
from opens1.train.trainer import Trainer, flops_per_token, train


def _stream(docs, cfg, rank=0, world=1):
    return PackedStream(docs, cfg.seq_len, cfg.micro_batch_size, seed=cfg.seed, rank=rank, world_size=world)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.slow
def test_loss_decreases_and_metrics_are_logged(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=8, lr=1e-2, warmup_steps=1)
    res = train(h.make_model(tokenizer), cfg, _stream(text_docs, cfg), tmp_path)
    assert res.steps == 8 and len(res.losses) == 8 and res.tokens > 0 and res.stopped == "max_steps"
    assert sum(res.losses[-2:]) < sum(res.losses[:2])
    recs = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r and "event" not in r]
    assert {"lr", "grad_norm", "tok_per_s", "mfu", "aux_loss"} <= set(steps[0])
    assert 0 < steps[-1]["mfu"] < 1


def test_resume_gives_the_same_loss_curve(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path / "a", max_steps=6, grad_accum=2, grad_accum_start=1, batch_warmup_steps=3)
    full = train(h.make_model(tokenizer), cfg, _stream(text_docs, cfg), cfg.out_dir).losses
    cfg_b = cfg.replace(out_dir=str(tmp_path / "b"))
    first = train(h.make_model(tokenizer), cfg_b, _stream(text_docs, cfg_b), cfg_b.out_dir, max_steps=3)
    assert first.steps == 3
    # a differently initialised model and a fresh stream: everything must come from the checkpoint
    rest = train(h.make_model(tokenizer, seed=123), cfg_b, _stream(text_docs, cfg_b), cfg_b.out_dir)
    assert rest.steps == 6 and rest.log_steps == [4, 5, 6]
    assert rest.losses == pytest.approx(full[3:], rel=1e-6, abs=1e-6)


def test_resume_with_changed_config_is_refused(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=2)
    train(h.make_model(tokenizer), cfg, _stream(text_docs, cfg), tmp_path)
    changed = cfg.replace(lr=0.5)
    with pytest.raises(ValueError, match="lr: 0.003 -> 0.5"):
        Trainer(h.make_model(tokenizer), changed, _stream(text_docs, changed), tmp_path)
    t = Trainer(h.make_model(tokenizer), changed, _stream(text_docs, changed), tmp_path, force=True)
    assert t.step == 2
    # a longer run (max_steps) is not a change of the trajectory
    assert Trainer(h.make_model(tokenizer), cfg.replace(max_steps=9), _stream(text_docs, cfg), tmp_path).step == 2


class _Poison:
    """A forward hook on the final norm that makes chosen forwards give NaN (or huge) hidden
    states, hence NaN (or huge) logits in the loss."""

    def __init__(self, model, mode="nan"):
        self.on, self.mode = False, mode
        model.language_model.norm.register_forward_hook(self)

    def __call__(self, module, args, out):
        if self.on:
            return out * float("nan") if self.mode == "nan" else out * 1e3
        return out


def test_nan_guard_skips_the_update(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=5)
    model = h.make_model(tokenizer)
    poison = _Poison(model)
    t = Trainer(model, cfg, _stream(text_docs, cfg), tmp_path)
    t.train_step()
    before = _params(model)
    poison.on = True
    m = t.train_step()
    assert m["skipped"] == "non-finite loss" and t.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))  # nothing moved
    assert all(p.grad is None for p in model.parameters())  # and no stale gradient is left
    poison.on = False
    assert not t.train_step()["skipped"]
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(model)))


def test_spike_guard_and_event_log(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=6, spike_factor=2.0, spike_warmup=2)
    model = h.make_model(tokenizer)
    poison = _Poison(model, mode="spike")
    t = Trainer(model, cfg, _stream(text_docs, cfg), tmp_path)
    for _ in range(3):
        t.train_step()
    poison.on = True
    assert t.train_step()["skipped"].startswith("loss spike")
    poison.on = False
    res = t.fit()
    assert res.skipped == 1 and res.steps == 6


def test_too_many_skips_stop_the_run(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=6, max_skips=2)
    model = h.make_model(tokenizer)
    _Poison(model).on = True
    with pytest.raises(RuntimeError, match="consecutive updates skipped"):
        Trainer(model, cfg, _stream(text_docs, cfg), tmp_path).fit()


class _SigtermAfter:
    """Iterator wrapper that sends this process SIGTERM when micro-batch `n` is taken."""

    def __init__(self, stream, n):
        self.stream, self.n, self.k = stream, n, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.k += 1
        if self.k == self.n:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.stream)

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, s):
        self.stream.load_state_dict(s)


def test_sigterm_writes_a_checkpoint_and_returns(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=50)
    res = train(h.make_model(tokenizer), cfg, _SigtermAfter(_stream(text_docs, cfg), 3), tmp_path)
    assert res.stopped == "sigterm" and res.steps == 3
    assert res.checkpoint.endswith("step_00000003")
    meta = json.loads((tmp_path / "checkpoints" / "step_00000003" / "meta.json").read_text())
    assert meta["data_state"][0]["index"] == 3 and meta["config"]["max_steps"] == 50
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is restored


def test_wall_clock_budget_stops_cleanly(tokenizer, text_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, max_steps=1000)
    res = train(h.make_model(tokenizer), cfg, _stream(text_docs, cfg), tmp_path, max_seconds=1e-3)
    assert res.stopped == "max_seconds" and res.steps == 1 and res.checkpoint is not None


def test_unwritable_out_dir_is_clear(tokenizer, text_docs, h, tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    cfg = h.small_cfg(blocker / "run")
    with pytest.raises(PermissionError, match="not writable"):
        Trainer(h.make_model(tokenizer), cfg, _stream(text_docs, cfg), cfg.out_dir)


def test_export_is_loadable(tokenizer, text_docs, h, tmp_path):
    import opens1

    cfg = h.small_cfg(tmp_path, max_steps=2)
    model = h.make_model(tokenizer)
    t = Trainer(model, cfg, _stream(text_docs, cfg), tmp_path)
    t.fit()
    t.export(tmp_path / "final")
    back = opens1.load_model(tmp_path / "final")
    ids = text_docs[0].input_ids[None, :16]
    model.eval()
    assert torch.allclose(back(ids).logits, model(ids).logits, atol=1e-5)


def test_flops_per_token_counts_active_experts(h, tokenizer):
    cfg = h.debug_config(tokenizer)
    dense = h.debug_config(tokenizer, moe=False)
    t = cfg.text
    # 6 x (attention + top-k experts + router + head) + 12 L d_attn T, by hand
    attn = t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim \
        + t.num_attention_heads * t.head_dim * t.hidden_size
    moe = 3 * t.hidden_size * t.moe_intermediate_size * t.num_experts_per_tok + t.hidden_size * t.num_experts
    n = t.num_hidden_layers * (attn + moe) + t.hidden_size * t.vocab_size
    assert flops_per_token(cfg, 64) == 6 * n + 12 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * 64
    assert flops_per_token(dense, 64) != flops_per_token(cfg, 64)


@pytest.mark.parametrize("reduction", ["token", "square"])
def test_accumulation_equals_one_big_batch(tokenizer, text_docs, h, tmp_path, reduction):
    """2 micro-batches of 1 row == 1 micro-batch of the same 2 rows: the loss normaliser is
    global to the step, so the loss and the gradient are those of the big batch. (Dense
    model: the MoE balance loss is a product of batch averages, so it is not additive.)"""
    norms, losses = [], []
    for mb, accum in ((2, 1), (1, 2)):
        cfg = h.small_cfg(tmp_path / f"{mb}x{accum}", micro_batch_size=mb, grad_accum=accum, max_steps=1,
                          loss_reduction=reduction, balanced_packing=False)
        model = h.make_model(tokenizer, moe=False)
        stream = PackedStream(text_docs, cfg.seq_len, mb, balanced=False)
        seen = []
        res = train(model, cfg, stream, cfg.out_dir, on_log=seen.append)
        losses.append(res.losses[0])
        assert seen and seen[0]["loss"] == res.losses[0]  # the on_log callback sees every logged step
        norms.append(seen[0]["grad_norm"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)
