"""`opens1 model ...`: params, init and generate through main(argv)."""

import torch

import opens1
from opens1.cli.model import main


def test_params_prints_total_and_active(capsys):
    assert main(["params", "tiny"]) == 0
    out = capsys.readouterr().out
    total, active = opens1.count_parameters("tiny"), opens1.count_parameters("tiny", active=True)
    assert f"{total:,}" in out and f"{active:,}" in out and active < total
    assert main(["params", "no-such-preset"]) == 2


def test_init_then_generate_with_ids(tmp_path, capsys):
    assert main(["init", "--preset", "debug", "--text-only", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path), "--ids", "1", "2", "3", "--max-new-tokens", "4"]) == 0
    new = [int(x) for x in capsys.readouterr().out.split()]
    model = opens1.load_model(tmp_path)
    ref = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4)[0, 3:].tolist()
    assert new == ref
    assert main(["generate", "--model", str(tmp_path), "--ids", "100000"]) == 2  # outside the vocabulary
