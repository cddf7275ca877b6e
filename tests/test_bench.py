"""The speed benches of the engine core (bench/train_speed.py, bench/model_speed.py,
bench/gpu_check.py): every command line docs/benchmarks.md shows parses, the FLOP count
charges the head to labelled rows only, and the GPU check runs its code paths on the CPU
(or says there is no CUDA device)."""

import importlib.util
import shlex
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _documented(script: str) -> list[list[str]]:
    """The argument lists of every `python bench/<script>.py ...` line in docs/benchmarks.md
    and in the script's own docstring."""
    lines = DOCS.read_text().splitlines() + (_bench(script).__doc__ or "").splitlines()
    out = []
    for line in lines:
        line = line.strip().lstrip("$").strip()
        if line.startswith(f"python bench/{script}.py"):
            out.append(shlex.split(line.split("#")[0])[2:])
    return out


@pytest.mark.parametrize("script", ["train_speed", "model_speed", "gpu_check"])
def test_documented_command_lines_parse(script):
    mod = _bench(script)
    argvs = _documented(script)
    assert argvs, f"docs/benchmarks.md shows no command line for bench/{script}.py"
    for argv in argvs:
        mod.parse_args(argv)


def test_bad_choices_are_usage_errors():
    with pytest.raises(SystemExit):
        _bench("train_speed").parse_args(["--stages", "rl"])
    with pytest.raises(SystemExit):
        _bench("gpu_check").parse_args(["--checks", "train,nope"])


def test_gpu_check_defaults_follow_the_device():
    gc = _bench("gpu_check")
    gpu, cpu = gc.parse_args([]), gc.parse_args(["--cpu"])
    assert (gpu.device, gpu.preset, gpu.layer_preset, gpu.seq_len) == ("cuda", "s1-100m", "intern-s1", 2048)
    assert (cpu.device, cpu.preset, cpu.layer_preset, cpu.seq_len) == ("cpu", "tiny", "tiny", 256)


def test_gpu_check_without_cuda_says_so(monkeypatch, capsys):
    gc = _bench("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_step_flops_charge_the_head_to_labelled_rows():
    from opens1.config import get_preset
    from opens1.train.trainer import flops_per_token, step_flops

    cfg = get_preset("tiny")
    head = 6 * cfg.text.hidden_size * cfg.text.vocab_size
    assert step_flops(cfg, 256, 1000, 1000) == pytest.approx(1000 * flops_per_token(cfg, 256))
    assert step_flops(cfg, 256, 1000, 200) == pytest.approx(1000 * flops_per_token(cfg, 256) - 800 * head)
    assert _bench("train_speed").step_flops(cfg, 256, 1000, 200) == pytest.approx(step_flops(cfg, 256, 1000, 200))


@pytest.mark.slow
def test_gpu_check_layer_runs_on_cpu(capsys):
    # the real-size layer check's code path on the tiny preset: same weights, close outputs, a timing
    assert _bench("gpu_check").main(["--cpu", "--checks", "layer", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "layer tiny" in out and "every check ran" in out
