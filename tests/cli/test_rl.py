"""`opens1 rl` (opens1/cli/rl.py) end to end on a debug-sized model: one step, then the
summary, the per-step metrics and the trained policy with its tokenizer on disk."""

import json

import opens1
from opens1.cli.rl import main
from tests.rl.conftest import tiny_parts


def test_rl_command_trains_and_writes_its_outputs(tmp_path):
    tok, _, model = tiny_parts()
    opens1.save_model(model, tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    out = tmp_path / "run"
    rc = main(["--model", str(tmp_path / "policy"), "--envs", "logic/counting", "--steps", "1",
               "--prompts-per-step", "1", "--rollouts", "2", "--max-new-tokens", "4", "--heldout-items", "2",
               "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["heldout_items"] == 2
    assert 0.0 <= summary["heldout_reward_before"] <= 1.0 and 0.0 <= summary["heldout_reward_after"] <= 1.0
    assert summary["settings"]["envs"] == ["logic/counting"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    again = opens1.load_model(out / "model")
    assert again.config.text.num_hidden_layers == model.config.text.num_hidden_layers
    assert len(opens1.load_tokenizer(out / "model")) == len(tok)
