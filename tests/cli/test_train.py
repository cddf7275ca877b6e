"""`opens1 train` end to end: config resolution, the padding report, and short runs of
the multimodal and SFT stages (LoRA + freezing) that export a loadable model."""

import json

import pytest

from opens1.cli.train import main


def test_print_config_applies_flags_and_overrides(capsys):
    assert main(["--preset", "sft", "--lr", "1e-4", "--set", "seq_len=96", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["stage"] == "sft" and cfg["lr"] == 1e-4 and cfg["seq_len"] == 96


def test_bad_override_is_a_clear_error(capsys):
    assert main(["--set", "no_such_field=1", "--print-config"]) == 2
    assert "unknown TrainConfig field" in capsys.readouterr().err


def test_padding_report(capsys):
    assert main(["--preset", "pretrain", "--sources", "gsm8k,protein", "--set", "samples_per_source=40",
                 "--seq-len", "256", "--padding-report", "--world", "2"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["greedy/balanced"]["padding_fraction"] <= rep["greedy/unbalanced"]["padding_fraction"]


@pytest.mark.slow
@pytest.mark.parametrize("stage,extra", [
    ("multimodal", ["--sources", "molecule_images,ecg,gsm8k", "--set", "samples_per_source=4"]),
    ("sft", ["--sources", "envs", "--set", "samples_per_source=12", "--lora-rank", "4",
             "--freeze", "vision,projector"]),
])
def test_stage_runs_and_exports(stage, extra, tmp_path, capsys):
    import opens1

    out = tmp_path / stage
    argv = ["--preset", stage, "--model", "debug", "--steps", "2", "--batch", "1", "--out", str(out),
            "--set", "progress=false", "--set", "tensorboard=false", *extra]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["last_loss"] > 0
    model = opens1.load_model(out / "final")
    assert not any("lora_" in k for k in model.state_dict())
