"""`opens1 eval` (opens1/cli/eval.py) against the fake endpoint: a run, its re-scoring, usage errors."""

import json

import pytest

from opens1.cli.eval import main
from opens1.eval.harness import read_jsonl, rescore_records
from opens1.infer.sampling import SamplingParams
from tests.eval import fake_endpoint

server = fake_endpoint.server  # the fake endpoint fixture, shared with tests/eval


def test_cli_end_to_end_and_rescore(server, tmp_path, capsys):
    url, _, _ = server
    out = tmp_path / "run"
    rc = main(["--endpoint", url, "--api-model", "fake", "--tasks", "logic/sort*", "--n-items", "3",
               "--samples", "2", "--out", str(out)])
    assert rc == 0
    gens = read_jsonl(out / "generations.jsonl")
    results = json.loads((out / "results.json").read_text())
    assert len(gens) == 6 and "logic/sorting" in results["tasks"]
    assert (out / "results.md").read_text().startswith("| task |")
    # Re-scoring saved generations reproduces the scores exactly, without a server.
    assert [r["score"] for r in rescore_records(gens)] == [r["score"] for r in gens]
    rc = main(["--rescore", str(out / "generations.jsonl"), "--out", str(out)])
    assert rc == 0
    res2 = json.loads((out / "results.rescored.json").read_text())
    assert res2["tasks"]["logic/sorting"]["mean"] == results["tasks"]["logic/sorting"]["mean"]


def test_cli_usage_errors(capsys):
    assert main([]) == 2
    assert main(["--list"]) == 0
    assert "chem/formula" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        main(["--rescore", "/nonexistent/generations.jsonl"])
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
