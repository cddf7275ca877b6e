"""Checkpoints: pickle-free round trips, atomic writes, and clear errors that lose nothing."""

import errno

import pytest
import torch

from opens1.train import checkpointing as ck
from tests.train.conftest import model_and_optimizer



def test_save_load_round_trip(tmp_path):
    m, opt = model_and_optimizer()
    path = ck.save_checkpoint(tmp_path, 7, m, opt, meta={"config": {"lr": 1}}, data_state={"epoch": 0, "index": 3})
    assert sorted(p.name for p in path.iterdir()) == [
        "meta.json", "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.safetensors"]
    assert not any(p.name.endswith((".pt", ".pkl", ".bin")) for p in tmp_path.rglob("*"))
    assert ck.latest_checkpoint(tmp_path) == path
    m2, opt2 = model_and_optimizer()
    with torch.no_grad():
        for p in m2.parameters():
            p.zero_()
    meta = ck.load_checkpoint(path, m2, opt2)
    assert meta["step"] == 7 and meta["data_state"] == {"epoch": 0, "index": 3}
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])


def test_keep_prunes_old_checkpoints(tmp_path):
    m, opt = model_and_optimizer()
    for s in (1, 2, 3):
        ck.save_checkpoint(tmp_path, s, m, opt, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000003"]


def test_full_disk_is_clear_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    m, opt = model_and_optimizer()
    good = ck.save_checkpoint(tmp_path, 1, m, opt)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(ck.CheckpointError, match="disk is full.*intact"):
        ck.save_checkpoint(tmp_path, 2, m, opt)
    assert ck.latest_checkpoint(tmp_path) == good and (good / "model.safetensors").is_file()
    assert not list((tmp_path / "checkpoints").glob(".tmp*"))  # no half-written debris


def test_unwritable_directory_is_a_clear_error(tmp_path):
    m, opt = model_and_optimizer()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ck.CheckpointError, match="was not written"):
        ck.save_checkpoint(blocker, 1, m, opt)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        ck.read_meta(tmp_path)
    assert ck.latest_checkpoint(tmp_path) is None
