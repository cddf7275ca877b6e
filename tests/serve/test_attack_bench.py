"""bench/attacks.py's server and tokenizer rows (docs/serving.md runs
`python bench/attacks.py --only server,tokenizer`): the command line parses, the heavy
requests are what the docs say, and (slow) against a real server from this tree each
heavy request gets the answer the budgets promise."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "attacks.py"


@pytest.fixture(scope="module")
def attacks():
    spec = importlib.util.spec_from_file_location("bench_attacks", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_registered_and_documented_line_parses(attacks, capsys):
    assert {"server", "tokenizer"} <= set(attacks.ROWS)
    assert "python bench/attacks.py --only server,tokenizer" in attacks.__doc__
    assert "python bench/attacks.py --only server,tokenizer" in (BENCH.parents[1] / "docs" / "serving.md").read_text()
    assert attacks.main(["--only", "no-such-row", "--baseline-rev", "none"]) == 0
    assert "ref/ours" in capsys.readouterr().out
    names = [name for name, _, _ in attacks._heavy_requests(quick=True)]
    assert names == ["server_smiles_84k", "server_smiles_60k", "server_png_set", "server_series_1500x1500",
                     "server_series_1000x1000", "server_molecules"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_server_rows_against_this_tree(attacks):
    server = attacks._Server(BENCH.parents[1] / "src")
    try:
        codes = {name: attacks._measure(server, fn)["codes"] for name, _, fn in attacks._heavy_requests(quick=True)
                 if name != "server_smiles_60k"}  # (seconds of tokenizing for a 400: left to the bench)
    finally:
        server.close()
    assert codes == {"server_smiles_84k": [400], "server_png_set": [400], "server_series_1500x1500": [400],
                     "server_series_1000x1000": [200], "server_molecules": [200] * 6}
