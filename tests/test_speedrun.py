"""The main job: a 3-minute speedrun's report schema, its wall-clock limit, and its model
directory (load_model + load_tokenizer + generate). One run serves every test."""

import json
import os
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


@pytest.mark.slow
def test_tokenizer_is_trained_when_missing(tmp_path, monkeypatch):
    """The speedrun trains the tiny preset's tokenizer if the bundled one is gone."""
    import opens1.speedrun as sr

    monkeypatch.setattr(sr, "TINY_TOKENIZER", tmp_path / "missing")
    tok = sr.load_or_train_tokenizer(tmp_path, None)
    assert (tmp_path / "tokenizer").is_dir()
    text = "Aspirin <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES> and <DNA>ATGGCGTTAGCA</DNA>"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok) <= opens1.get_preset("tiny").text.vocab_size


def test_bundled_tiny_tokenizer_reads_smiles_and_dna_one_character_a_token():
    import opens1.speedrun as sr

    tok = opens1.load_tokenizer(sr.TINY_TOKENIZER)
    assert (len(tok) + 63) // 64 * 64 == opens1.get_preset("tiny").text.vocab_size
    assert opens1.get_preset("tiny").text.tie_word_embeddings
    smiles = "CC(=O)N(C)c1ccc(NC(=O)N2CCOCC2)cc1"
    ids = tok.encode(f"Rings of {smiles}?")
    assert sum(tok.domain_of(i) == "smiles" for i in ids) == len(smiles)
    dna = "ATGGCGTTAGCA"
    assert sum(tok.domain_of(i) == "dna" for i in tok.encode(f"<DNA>{dna}</DNA>")) == len(dna)


# ---------------------------------------------------------------- pieces, without a run


def test_clock_shares_and_reserve(monkeypatch):
    import opens1.speedrun as sr

    now = [100.0]
    monkeypatch.setattr(sr.time, "perf_counter", lambda: now[0])
    clock = sr.Clock(10, start=90.0)  # the process started 10 s ago
    assert clock.elapsed() == 10.0 and clock.left() == 590.0
    assert clock.reserve == pytest.approx(6.0 + 0.02 * 600)
    todo = ["sft", "rl", "eval"]
    total = sum(clock.share(s, todo) for s in todo)
    assert total == pytest.approx(590.0 - clock.reserve)  # everything but the reserve is handed out
    assert clock.share("sft", todo) / clock.share("eval", todo) == pytest.approx(
        sr.STAGE_SHARE["sft"] / sr.STAGE_SHARE["eval"])
    now[0] = 1000.0  # over budget: nothing left to hand out
    assert clock.left() == 0.0 and clock.share("sft", todo) == 0.0


def test_process_age_counts_the_interpreter_start():
    import opens1.speedrun as sr

    age = sr.process_age()
    assert 0.0 < age < 24 * 3600  # this test process has been running for a while


def test_fixed_work_and_setting_parsers():
    import opens1.speedrun as sr

    assert sr.parse_steps("sft=300,rl=20") == {"sft": 300, "rl": 20}
    n = sr.parse_steps("1000")
    assert n["sft"] == 1000 and n["rl"] == round(1000 * sr.STAGE_SHARE["rl"] / sr.STAGE_SHARE["sft"])
    assert sr.parse_steps("") == {}
    for bad in ("sft=0", "eval=3", "sft=x"):
        with pytest.raises(ValueError, match="--steps"):
            sr.parse_steps(bad)
    assert sr.parse_sets(["sft.lr=1e-3", "sft.warmup_steps=7"]) == {"sft": {"lr": 1e-3, "warmup_steps": 7}}
    assert sr.parse_sets(["rl.lr=3e-5", "rl.entropy_control=none"]) == {"rl": {"lr": 3e-5, "entropy_control": "none"}}
    cfg = sr.rl_configs({"lr": 3e-5, "entropy_control": "none"}, envs=["chem/ring_count"], lr=1e-4)
    assert cfg.lr == 3e-5 and cfg.loss.entropy_control == "none" and cfg.envs == ["chem/ring_count"]
    for bad in (["rl.no_such_field=1"], ["eval.items=3"]):
        with pytest.raises(ValueError):
            sr.parse_sets(bad)
    with pytest.raises(ValueError):
        sr.parse_sets(["sft.no_such_field=1"])


def test_command_lines_parse(monkeypatch):
    """The command lines README.md and the module docstring show."""
    import opens1.speedrun as sr

    seen = []
    monkeypatch.setattr(sr, "run", lambda scfg, start=None: seen.append(scfg))
    monkeypatch.setattr(sr, "train_tiny_tokenizer", lambda out, root=None: seen.append((out, root)))
    monkeypatch.setattr(sr, "check_dir", lambda path, what="": str(path))  # ../shared/data may be absent
    assert sr.main(["--minutes", "3"]) == 0
    assert sr.main(["--steps", "sft=3000,rl=200", "--seed", "1"]) == 0
    assert sr.main(["--tasks", "chem/ring_count", "--stages", "sft,eval", "--minutes", "2"]) == 0
    assert sr.main(["--data", "../shared/data", "--set", "sft.lr=1e-3"]) == 0
    assert sr.main(["--build-tokenizer", "src/opens1/tokenizer/assets/tiny", "--data", "../shared/data"]) == 0
    assert sr.main(["--minutes", "20", "--seed", "1"]) == 0  # README's results table
    assert seen[0].minutes == 3 and seen[1].steps == {"sft": 3000, "rl": 200} and seen[1].seed == 1
    assert seen[2].tasks == ["chem/ring_count"] and seen[2].stages == ["sft", "eval"]
    assert seen[3].train == {"sft": {"lr": 1e-3}} and seen[4] == ("src/opens1/tokenizer/assets/tiny", "../shared/data")
    assert seen[5].minutes == 20 and seen[5].seed == 1
    with pytest.raises(SystemExit):
        sr.main(["--stages", "sft,dance"])


def test_warnings_name_what_went_wrong():
    import opens1.speedrun as sr

    scfg = sr.SpeedrunConfig(minutes=3, eval_items=400)
    report = {"tasks": ["chem/ring_count", "bio/gc_count"], "wall_seconds": 185.0,
              "stages": {"pretrain": {"steps": 3, "loss": [9.0, 9.5]},
                         "sft": {"steps": 300, "loss": [5.0, 0.3], "dropped_documents": 0}},
              "eval": {"chem/ring_count": {"items": 96, "asked_items": 400}}}
    text = "\n".join(sr._warnings(report, scfg))
    assert "pretrain stage ran only 3 steps" in text and "pretrain loss did not fall" in text
    assert "sft" not in text.replace("sft_", "")
    assert "bio/gc_count was not evaluated" in text and "96 of 400 items" in text
    assert "RL was skipped" in text and "over its 180 s budget" in text


def test_rl_runs_only_where_sft_beats_the_prior():
    import opens1.speedrun as sr

    probe = {"a": {"score": 0.6, "above_prior": 0.30, "stderr": 0.05},
             "b": {"score": 0.35, "above_prior": 0.05, "stderr": 0.05},  # within noise of its prior
             "c": {"score": 0.2, "above_prior": -0.1, "stderr": 0.05},
             "e": {"score": 0.99, "above_prior": 0.8, "stderr": 0.02}}  # solved: nothing left for RL
    assert sr.choose_rl_envs(probe, ["a", "b", "c", "d", "e"]) == ["a"]
    probe["f"] = {"score": 0.8, "above_prior": 0.55, "stderr": 0.04}  # both mostly right: the one with most room
    probe["g"] = {"score": 0.55, "above_prior": 0.3, "stderr": 0.04}
    assert sr.choose_rl_envs(probe, ["a", "f", "g", "e"]) == ["g"]
    probe["h"] = {"score": 0.45, "above_prior": 0.3, "stderr": 0.04}  # none mostly right: the furthest along
    assert sr.choose_rl_envs(probe, ["b", "h", "e"]) == ["h"]
    assert sr.choose_rl_envs(probe, ["b", "c", "e"]) == []


def test_equal_length_series_prompts_are_generated_as_one_batch():
    import opens1.speedrun as sr
    from opens1.envs import get_env
    from opens1.infer.sampling import SamplingParams
    from opens1.rl.rollout import LocalEngine, response_text

    tok = opens1.load_tokenizer(sr.TINY_TOKENIZER)
    model, proc = sr.build_model("tiny", tok, 0)
    env = get_env("physics/signal_frequency")
    prompts = [proc(c.messages(), enable_thinking=False) for c in env.cases(5, "heldout")]
    prompts.insert(2, proc([{"role": "user", "content": "How many rings has c1ccccc1?"}], enable_thinking=False))
    engine = LocalEngine(model, pad_token_id=tok.pad_token_id, share=True)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0, stop_token_ids=(tok.eos_token_id,), vocab_limit=len(tok))
    calls = []
    real = engine.generate
    engine.generate = lambda ps, *a, **k: calls.append(len(ps)) or real(ps, *a, **k)
    texts = sr.greedy_texts(engine, tok, prompts, greedy)
    assert calls == [1, 1]  # the text prompt, then the five series prompts stacked in one prompt
    one_by_one = [response_text(tok, real([p], 1, greedy, seed=0)[0][0]) for p in prompts]
    assert texts == one_by_one


def test_threads_are_chosen_by_measurement():
    import torch

    import opens1.speedrun as sr

    before = torch.get_num_threads()
    try:
        n, ratio = sr.pick_threads(trials=1, seconds=0.02)
        assert n in (1, os.cpu_count()) and ratio > 0 and torch.get_num_threads() == n
        assert (n > 1) == (ratio >= 1.3) or os.cpu_count() == 1
    finally:
        torch.set_num_threads(before)


def test_rl_loop_stops_at_its_steps_and_logs_progress(capsys):
    import opens1.speedrun as sr
    from opens1.rl.trainer import RLResult

    class Fake:
        def __init__(self):
            self.result = RLResult()

        def step(self):
            self.result.steps += 1
            return {"reward_mean": 0.5, "kept_groups": 8, "drawn_prompts": 16, "entropy": 0.1}

    fake = Fake()
    res = sr.rl_loop(fake, steps=5, seconds=None, every=0.0)
    assert res.steps == 5 and res.seconds >= 0
    assert capsys.readouterr().err.count("kept groups 8/16") == 5
    assert sr.rl_loop(Fake(), steps=None, seconds=0.0).steps == 0  # no time: no step


def test_documented_reproduction_command_parses():
    """docs/evaluation.md's `opens1 eval` line for a speedrun model: greedy, no thinking, 16 tokens."""
    import re
    import shlex
    from pathlib import Path

    from opens1.cli.eval import build_parser

    doc = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    line = re.search(r"\$ (opens1 eval --model runs/speedrun/model .*?)\n\s*```", doc, re.S).group(1)
    args = build_parser().parse_args(shlex.split(line.replace("\\\n", " "))[2:])
    assert args.temperature == 0 and args.max_tokens == 16 and args.no_thinking and args.n_items == 400
