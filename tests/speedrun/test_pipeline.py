"""The main job: a 3-minute speedrun's report schema, its wall-clock limit, and its model
directory (load_model + load_tokenizer + generate). One run serves every test."""

import json
import subprocess
import sys
import time

import pytest
import torch

import opens1
from opens1.speedrun.config import SpeedrunConfig
from opens1.speedrun.pipeline import _warnings

MINUTES = 3.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "opens1", "speedrun", "--minutes", str(MINUTES), "--out", str(out)],
                          capture_output=True, text=True, timeout=MINUTES * 60 + 300)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, wall


@pytest.mark.slow
def test_report_schema(run_dir):
    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    for key in ("stages", "eval", "wall_seconds", "config", "git_revision", "model", "warnings", "tasks"):
        assert key in report
    for name in ("pretrain", "multimodal", "sft"):
        st = report["stages"][name]
        assert isinstance(st["loss"], list) and all(isinstance(x, float) for x in st["loss"])
        assert st["steps"] >= 1 and st["tokens"] > 0 and st["seconds"] > 0
    # even the 3-minute run shows a falling loss
    for name in ("pretrain", "sft"):
        loss = report["stages"][name]["loss"]
        assert min(loss[len(loss) // 2:]) < loss[0]
    assert report["stages"]["sft"]["dropped_documents"] == 0  # long conversations are packed, not dropped
    assert report["eval"], "no task was evaluated"
    for task, r in report["eval"].items():
        assert 0.0 <= r["score"] <= 1.0 and 0.0 <= r["prior"] <= 1.0 and r["items"] >= 1
        assert r["above_prior"] == pytest.approx(r["score"] - r["prior"]) and r["stderr"] > 0
        assert r["answer_entropy_bits"] > 0 and r["answer_ce_bits"] > 0
    # the parameter and vocabulary numbers are the preset's (`opens1 model params tiny`)
    assert report["model"]["parameters"] == opens1.count_parameters("tiny")
    assert report["model"]["vocab_size"] == opens1.get_preset("tiny").text.vocab_size >= report["model"]["tokenizer_size"]
    if "rl" in report["stages"]:
        rl = report["stages"]["rl"]
        for key in ("heldout_reward_before", "heldout_reward_after", "heldout_items", "reward", "entropy",
                    "heldout_answer_prior"):
            assert isinstance(rl[key], (int, float)) or key in ("reward", "entropy")
        assert 0.0 <= rl["heldout_answer_prior"] <= 1.0
        assert set(rl["heldout_by_env"]) == set(rl["envs"])
        assert sum(v["items"] for v in rl["heldout_by_env"].values()) == rl["heldout_items"]
    md = (out / "report.md").read_text()
    assert "| pretrain |" in md and "loss.png" in md and "answer prior" in md
    assert (out / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_wall_clock_limit(run_dir):
    out, wall = run_dir
    report = json.loads((out / "report.json").read_text())
    # the budget counts from process start: imports included, report included
    assert report["wall_seconds"] <= MINUTES * 60
    assert wall <= MINUTES * 60 + 5  # + the interpreter's exit


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
def test_opens1_eval_reproduces_the_reports_heldout_scores(run_dir, tmp_path):
    """A greedy `opens1 eval` of the saved model (no thinking, 16 new tokens, the first N
    held-out items) scores what the speedrun's own evaluation reported, item for item."""
    from opens1.cli.eval import main as eval_main

    out, _ = run_dir
    report = json.loads((out / "report.json").read_text())
    checked = 0
    for task in ("chem/ring_count", "physics/signal_frequency"):  # a text task and the time-series one
        if task not in report["eval"]:
            continue
        r = report["eval"][task]
        dest = tmp_path / task.replace("/", "_")
        assert eval_main(["--model", str(out / "model"), "--tasks", task, "--n-items", str(r["items"]),
                          "--temperature", "0", "--max-tokens", "16", "--no-thinking", "--batch-size", "32",
                          "--out", str(dest)]) == 0
        got = json.loads((dest / "results.json").read_text())["tasks"][task]
        assert got["n_items"] == r["items"] and got["mean"] == pytest.approx(r["score"], abs=1e-9)
        checked += 1
    assert checked


# ---------------------------------------------------------------- pieces, without a run


def test_warnings_name_what_went_wrong():
    scfg = SpeedrunConfig(minutes=3, eval_items=400)
    report = {"tasks": ["chem/ring_count", "bio/gc_count"], "wall_seconds": 185.0,
              "stages": {"pretrain": {"steps": 3, "loss": [9.0, 9.5]},
                         "sft": {"steps": 300, "loss": [5.0, 0.3], "dropped_documents": 0}},
              "eval": {"chem/ring_count": {"items": 96, "asked_items": 400}}}
    text = "\n".join(_warnings(report, scfg))
    assert "pretrain stage ran only 3 steps" in text and "pretrain loss did not fall" in text
    assert "sft" not in text.replace("sft_", "")
    assert "bio/gc_count was not evaluated" in text and "96 of 400 items" in text
    assert "RL was skipped" in text and "over its 180 s budget" in text
