"""The main job: a 3-minute speedrun's report schema, its wall-clock limit, and its model
directory (load_model + load_tokenizer + generate). One run serves every test."""

import json
import subprocess
import sys
import time

import pytest
import torch

import opens1

MINUTES = 3.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "opens1.cli", "speedrun", "--minutes", str(MINUTES), "--out", str(out)],
                          capture_output=True, text=True, timeout=MINUTES * 60 + 300)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, wall


@pytest.mark.slow
def test_report_schema(run_dir):
    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    for key in ("stages", "eval", "wall_seconds", "config", "git_revision", "model"):
        assert key in report
    for name in ("pretrain", "multimodal", "sft"):
        st = report["stages"][name]
        assert isinstance(st["loss"], list) and all(isinstance(x, float) for x in st["loss"])
        assert st["steps"] >= 1 and st["tokens"] > 0 and st["seconds"] > 0
    # even the 3-minute run shows a falling loss
    pre = report["stages"]["pretrain"]["loss"]
    assert min(pre[len(pre) // 2:]) < pre[0]
    assert report["eval"], "no task was evaluated"
    for task, r in report["eval"].items():
        assert 0.0 <= r["score"] <= 1.0 and r["items"] >= 1
    if "rl" in report["stages"]:
        rl = report["stages"]["rl"]
        for key in ("heldout_reward_before", "heldout_reward_after", "heldout_items", "reward", "entropy",
                    "heldout_answer_prior"):
            assert key in rl
        assert 0.0 <= rl["heldout_answer_prior"] <= 1.0
        assert set(rl["heldout_answer_prior_by_env"]) == set(rl["heldout_by_env_before"])
    md = (out / "report.md").read_text()
    assert "| pretrain |" in md and "loss.png" in md
    assert (out / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_wall_clock_limit(run_dir):
    out, wall = run_dir
    report = json.loads((out / "report.json").read_text())
    assert report["wall_seconds"] <= MINUTES * 60
    # process start-up (imports) comes on top of the budgeted run
    assert wall <= MINUTES * 60 + 30


@pytest.mark.slow
def test_model_directory_loads_and_generates(run_dir):
    out, _ = run_dir
    model = opens1.load_model(out / "model")
    tok = opens1.load_tokenizer(out / "model")
    proc = opens1.Processor(tok, model.config)
    enc = proc([{"role": "user", "content": "How many rings does c1ccccc1 have?"}], enable_thinking=False)
    seq = model.generate(enc["input_ids"], max_new_tokens=8, temperature=0.0, vocab_limit=len(tok))
    assert seq.shape[1] > enc["input_ids"].shape[1]
    text = tok.decode(seq[0, enc["input_ids"].shape[1]:].tolist())
    assert isinstance(text, str)
    # the saved weights are the trained ones: reloading is bit-exact
    again = opens1.load_model(out / "model")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_tokenizer_vocabularies_are_trained_when_missing(tmp_path, monkeypatch):
    """The speedrun trains the tokenizer's vocabularies (fast preset) if the bundled ones are gone."""
    import opens1.speedrun as sr

    real = opens1.load_tokenizer

    def bundled_missing(path=None):
        if path is None:
            raise FileNotFoundError("bundled tokenizer assets missing (simulated)")
        return real(path)

    monkeypatch.setattr(opens1, "load_tokenizer", bundled_missing)
    tok = sr.load_or_train_tokenizer(tmp_path, None)
    assert (tmp_path / "tokenizer").is_dir()
    text = "Aspirin <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES> and <DNA>ATGGCGTTAGCA</DNA>"
    assert tok.decode(tok.encode(text)) == text
