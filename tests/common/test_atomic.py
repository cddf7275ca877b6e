"""Files written whole (config.json, weights, tokenizer files, eval results) get the mode a
plain open() gives (0666 minus the umask), not mkstemp's 0600, and replace atomically."""

import json
import os
import stat

import pytest
import torch

from opens1.common.atomic import atomic_write, umask


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert umask() == 0o027
        atomic_write(tmp_path / "a.txt", "x")
        assert _mode(tmp_path / "a.txt") == 0o640
    finally:
        os.umask(old)
    atomic_write(tmp_path / "b.bin", b"y", mode=0o600)
    assert _mode(tmp_path / "b.bin") == 0o600


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    atomic_write(tmp_path / "f.json", "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "f.json", write=broken)
    assert (tmp_path / "f.json").read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_checkpoint_tokenizer_and_eval_results_are_0644(tmp_path, umask_022):
    import opens1
    from opens1.config import get_preset
    from opens1.eval.harness import write_jsonl_atomic
    from opens1.eval.report import write_report
    from opens1.models.s1 import S1ForConditionalGeneration

    torch.manual_seed(0)
    cfg = get_preset("tiny")
    opens1.save_model(S1ForConditionalGeneration(cfg), tmp_path / "model")
    opens1.load_tokenizer().save_pretrained(tmp_path / "model")
    write_report({"tasks": {}, "macro_mean": 0.0}, tmp_path / "eval")
    write_jsonl_atomic(tmp_path / "eval" / "generations.jsonl", [{"a": 1}])
    files = [p for p in (tmp_path / "model").iterdir()] + [p for p in (tmp_path / "eval").iterdir()]
    names = {p.name for p in files}
    assert {"config.json", "model.safetensors.index.json", "opens1_tokenizer.json", "results.json",
            "generations.jsonl"} <= names and any(n.endswith(".safetensors") for n in names)
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(0o644) for p in files}
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["macro_mean"] == 0.0
