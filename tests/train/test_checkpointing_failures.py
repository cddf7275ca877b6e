"""Checkpoints under real failures: a full disk (a real 2 MiB tmpfs, not a mocked error),
SIGKILL in the middle of a save, and a damaged newest checkpoint at resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from opens1.train import checkpointing as ck
from tests.train.conftest import model_and_optimizer

SRC = str(Path(ck.__file__).resolve().parents[2])



FULL_DISK = textwrap.dedent("""
    import json, subprocess, sys, torch
    from pathlib import Path
    from opens1.train import checkpointing as ck

    out = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(out)], check=True)

    def model_opt(width):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Linear(width, 2))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        m(torch.randn(3, 4)).sum().backward()
        opt.step()
        return m, opt

    good = ck.save_checkpoint(out, 1, *model_opt(8))  # a few KB: fits
    errors = []
    for step in (2, 3, 4):  # 1 M parameters (4 MB of weights, 8 MB of AdamW state): does not fit
        try:
            ck.save_checkpoint(out, step, *model_opt(1 << 18))
        except ck.CheckpointError as e:
            errors.append(str(e))
        except Exception as e:
            errors.append(f"RAW {type(e).__name__}: {e}")
    root = out / "checkpoints"
    print(json.dumps({"errors": errors, "entries": sorted(p.name for p in root.iterdir()),
                      "latest": str(ck.latest_checkpoint(out)), "good": str(good)}))
""")


@pytest.mark.slow
def test_full_disk_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    """On a real out-of-space filesystem: a 2 MiB tmpfs mounted in a private mount
    namespace (`unshare -m` as root, `unshare -Urm` otherwise), gone with the child."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is not installed")
    argv = [unshare, "-m"] if os.geteuid() == 0 else [unshare, "-Urm"]
    probe = subprocess.run(argv + ["true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here ({probe.stderr.strip()})")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(argv + [sys.executable, "-c", FULL_DISK, str(mnt)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(res["errors"]) == 3
    for e in res["errors"]:
        assert not e.startswith("RAW"), e  # not a raw SafetensorError
        assert "disk is full" in e and "step_00000001" in e and "intact" in e
    assert res["entries"] == ["latest", "step_00000001"]  # no temporary directory, retry after retry
    assert res["latest"] == res["good"]
    assert not list(mnt.iterdir())  # the tmpfs lived in the child's mount namespace only


SAVE_AND_HANG = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from opens1.train import checkpointing as ck

    real = ck.save_file

    def slow_save(tensors, path):  # the model file is written, then the process "hangs"
        real(tensors, path)
        Path(sys.argv[2]).write_text("writing")
        time.sleep(120)

    ck.save_file = slow_save
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 2)
    ck.save_checkpoint(sys.argv[1], 5, m, None)
""")


def test_sigkill_mid_save_leaves_a_temp_dir_that_the_next_run_removes(tmp_path):
    m, opt = model_and_optimizer()
    good = ck.save_checkpoint(tmp_path, 1, m, opt)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", SAVE_AND_HANG, str(tmp_path), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), "the child did not reach the save"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    root = tmp_path / "checkpoints"
    stale = [p.name for p in root.iterdir() if p.name.startswith(".tmp_step_")]
    assert len(stale) == 1 and stale[0].startswith(f".tmp_step_00000005_{child.pid}_")
    assert ck.latest_checkpoint(tmp_path) == good  # the resume path cleans up ...
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
    (root / stale[0]).mkdir()  # ... and so does the next save
    ck.save_checkpoint(tmp_path, 2, m, opt)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001", "step_00000002"]


def _flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated weights", "flipped bit in weights", "truncated meta",
                                    "edited meta", "missing optimizer"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage):
    m, opt = model_and_optimizer()
    one = ck.save_checkpoint(tmp_path, 1, m, opt, keep=2)
    m2, opt2 = model_and_optimizer(8)
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    two = ck.save_checkpoint(tmp_path, 2, m2, opt2, keep=2)
    model, meta = two / "model.safetensors", two / "meta.json"
    if damage == "truncated weights":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "flipped bit in weights":
        _flip(model)
    elif damage == "truncated meta":
        meta.write_bytes(meta.read_bytes()[:40])
    elif damage == "edited meta":
        meta.write_text(meta.read_text().replace('"step": 2', '"step": 20'))
    else:
        (two / "optimizer.safetensors").unlink()
    assert ck.verify_checkpoint(one) is None and ck.verify_checkpoint(two)
    with pytest.warns(RuntimeWarning, match="step_00000002 is damaged"):
        assert ck.latest_checkpoint(tmp_path) == one
    m3, opt3 = model_and_optimizer(8)
    assert ck.load_checkpoint(one, m3, opt3)["step"] == 1
    for a, b in zip(m.parameters(), m3.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ck.CheckpointError, match="cannot be loaded"):
        ck.load_checkpoint(two, m3, opt3)
    with pytest.raises(ck.CheckpointError, match="cannot be resumed from"):
        ck.latest_checkpoint(two)  # named explicitly: no fallback, a clear error


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    m, opt = model_and_optimizer()
    for s in (1, 2):
        _flip(ck.save_checkpoint(tmp_path, s, m, opt) / "model.safetensors")
    with warnings.catch_warnings(), pytest.raises(ck.CheckpointError, match="no intact checkpoint"):
        warnings.simplefilter("ignore")
        ck.latest_checkpoint(tmp_path)


def test_trainer_resumes_from_the_intact_checkpoint(tokenizer, text_docs, h, tmp_path):
    from opens1.data.packing import PackedStream
    from opens1.train.trainer import Trainer, train

    def stream(cfg):
        return PackedStream(text_docs, cfg.seq_len, cfg.micro_batch_size, seed=cfg.seed)

    cfg = h.small_cfg(tmp_path, max_steps=2, ckpt_every=1, keep_checkpoints=2)
    train(h.make_model(tokenizer), cfg, stream(cfg), tmp_path)
    newest = tmp_path / "checkpoints" / "step_00000002"
    (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="step_00000002 is damaged"):
        t = Trainer(h.make_model(tokenizer), cfg.replace(max_steps=3), stream(cfg), tmp_path)
    assert t.step == 1 and t.last_checkpoint.endswith("step_00000001")
