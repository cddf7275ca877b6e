"""`opens1 speedrun`'s command line."""

import pytest

from opens1.cli import speedrun as sr


def test_command_lines_parse(monkeypatch):
    """The command lines README.md and the module docstring show."""
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
