"""FSDP2 on CPU (gloo, 2 processes): the loss matches single-process training, an MoE step
where most experts get no token on a rank finishes, and a SIGKILLed run resumes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import GLOO_TEARDOWN_RERUN

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, out: str, mode: str) -> None:
    """One rank: build the debug model, (FSDP-)train 3 steps, rank 0 writes the losses."""
    import torch.distributed as dist

    import opens1
    from opens1.config import get_preset
    from opens1.data.packing import PackedStream
    from opens1.data.sources import build_documents, load_mixture
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.processor import configure
    from opens1.train.config import TrainConfig
    from opens1.train.parallelize import apply_fsdp
    from opens1.train.distributed import shutdown_distributed
    from opens1.train.trainer import train

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    tok = opens1.load_tokenizer()
    mcfg = get_preset("debug")
    mcfg.text.vocab_size = -(-len(tok) // 64) * 64
    seq_len, mb = 128, 2
    if mode == "moe_sparse":  # 16 experts, top-1, 8 tokens per rank: at least 8 experts idle per layer
        mcfg.text.num_experts, mcfg.text.num_experts_per_tok = 16, 1
        seq_len, mb = 8, 1
    configure(tok, mcfg)
    torch.manual_seed(0)
    model = S1ForConditionalGeneration(mcfg)
    if world > 1:
        apply_fsdp(model)
    docs = build_documents(load_mixture("gsm8k:1,smiles:1", None, samples_per_unit=30), "pretrain", tok)
    cfg = TrainConfig(model="debug", seq_len=seq_len, micro_batch_size=mb, grad_accum=2 // world, max_steps=3,
                      lr=3e-3, warmup_steps=1, out_dir=out, ckpt_every=0, progress=False, tensorboard=False,
                      spike_factor=0.0)
    stream = PackedStream(docs, seq_len, mb, rank=rank, world_size=world)
    res = train(model, cfg, stream, out, resume=False)
    if rank == 0:
        Path(out, "losses.json").write_text(json.dumps(res.losses))
    del model, stream
    shutdown_distributed()


def _spawn(tmp_path, mode):
    out = str(tmp_path / f"fsdp_{mode}")
    mp.spawn(_run, args=(2, _free_port(), out, mode), nprocs=2, join=True)
    return json.loads(Path(out, "losses.json").read_text())


@GLOO_TEARDOWN_RERUN
def test_fsdp_two_ranks_match_single_process(tmp_path):
    single = str(tmp_path / "single")
    _run(0, 1, 0, single, "parity")
    ref = json.loads(Path(single, "losses.json").read_text())
    got = _spawn(tmp_path, "parity")
    assert len(got) == len(ref) == 3
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-4)


@GLOO_TEARDOWN_RERUN
def test_fsdp_checkpoint_resumes_in_one_process(tmp_path):
    """2 FSDP ranks write a full (unsharded) checkpoint; one process resumes from it."""
    import opens1
    from opens1.config import get_preset
    from opens1.data.packing import PackedStream
    from opens1.data.sources import build_documents, load_mixture
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.processor import configure
    from opens1.train.checkpointing import latest_checkpoint
    from opens1.train.config import TrainConfig
    from opens1.train.trainer import Trainer

    _spawn(tmp_path, "parity")
    out = tmp_path / "fsdp_parity"
    assert latest_checkpoint(out).name == "step_00000003"
    tok = opens1.load_tokenizer()
    mcfg = get_preset("debug")
    mcfg.text.vocab_size = -(-len(tok) // 64) * 64
    configure(tok, mcfg)
    model = S1ForConditionalGeneration(mcfg)
    docs = build_documents(load_mixture("gsm8k:1,smiles:1", None, samples_per_unit=30), "pretrain", tok)
    cfg = TrainConfig(model="debug", seq_len=128, micro_batch_size=2, grad_accum=1, max_steps=5, lr=3e-3,
                      warmup_steps=1, out_dir=str(out), ckpt_every=0, progress=False, tensorboard=False,
                      spike_factor=0.0)
    t = Trainer(model, cfg, PackedStream(docs, 128, 2), out, force=True)  # grad_accum 2 -> 1: forced
    assert t.step == 3 and t.batches.state_dict()["index"] == 6  # 3 steps x 2 ranks x 1 micro-batch
    res = t.fit()
    assert res.steps == 5 and all(l == l for l in res.losses)


@GLOO_TEARDOWN_RERUN
def test_fsdp_moe_with_idle_experts_finishes(tmp_path):
    losses = _spawn(tmp_path, "moe_sparse")
    assert len(losses) == 3 and all(l == l and l < 20 for l in losses)


def _cli(out, steps, extra=()):
    return [sys.executable, "-m", "opens1.cli.train", "--preset", "pretrain", "--model", "debug", "--steps", str(steps),
            "--out", str(out), "--sources", "gsm8k,smiles", "--seq-len", "64", "--batch", "1", "--no-export",
            "--set", "samples_per_source=20", "--set", "ckpt_every=2", "--set", "progress=false",
            "--set", "tensorboard=false", "--set", "warmup_steps=2", *extra]


def _losses(out):
    recs = [json.loads(l) for l in Path(out, "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r and "event" not in r}


def test_sigkill_then_resume_loses_only_unsaved_steps(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(run, 400), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = run / "checkpoints"

    def saved() -> int:  # the step `latest` points at (0 before the first checkpoint)
        try:
            return int((ckpts / "latest").read_text().strip().split("_")[1])
        except (OSError, IndexError, ValueError):
            return 0

    # Poll `latest`, not the step_4 folder: with keep_checkpoints=2 a fast run prunes step_4 as soon as
    # step_8 is written, and on a loaded machine a poll can miss the moment it existed.
    deadline = time.time() + 240
    while time.time() < deadline and saved() < 4 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = saved()
    assert last >= 4, "the run never saved step 4"
    assert last % 2 == 0 and (ckpts / f"step_{last:08d}").is_dir()  # only steps since the last save are lost
    # An uninterrupted reference run to a few steps past the kill, then resume the killed run to the same
    # step (the same config; a longer max_steps is allowed): the resumed steps must match it. The WSD
    # decay starts at 0.8 * max_steps, so end >= 1.25 * last keeps the steps before the kill at the same
    # (constant) learning rate in the 400-step run and in the reference.
    end = max(last + 4, -(-5 * last // 4))
    ref_dir = tmp_path / "ref"
    subprocess.run(_cli(ref_dir, end), check=True, env=env, capture_output=True, timeout=300)
    ref = _losses(ref_dir)
    subprocess.run(_cli(run, end), check=True, env=env, capture_output=True, timeout=300)
    resumed = _losses(run)  # later lines overwrite the killed run's steps after `last`
    for step in range(last + 1, end + 1):
        assert resumed[step] == pytest.approx(ref[step], rel=1e-5), step
