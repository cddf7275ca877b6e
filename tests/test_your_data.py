"""docs/your-data.md's walk-through runs as written, at tiny scale: corpus JSONL -> `opens1 data
build` -> pretraining on its Parquet shard -> SFT on the chat JSONL (images, a tool call) -> RL on
the verifiable items -> eval -> `opens1 serve`, evaluated over the OpenAI API."""

from __future__ import annotations

import json
import shlex
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.test_docs import documented

ROOT = Path(__file__).resolve().parents[1]


def _walkthrough() -> list[list[str]]:
    lines = [c for f, c in documented() if f == "docs/your-data.md" and "runs/my-" in c and "rescore" not in c]
    return [shlex.split(c, comments=True) for c in lines]


def test_walkthrough_is_the_documented_chain():
    steps = [" ".join(a[:3]) for a in _walkthrough()]
    assert steps == ["opens1 data build", "opens1 train --preset", "opens1 train --preset", "opens1 rl --model",
                     "opens1 eval --model", "opens1 serve runs/my-rl/model", "opens1 eval --endpoint"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # seven commands end to end on the tiny preset (about 40 s on 2 busy cores)
def test_walkthrough_runs(tmp_path, monkeypatch, capsys):
    import uvicorn

    from opens1.cli import main

    shutil.copytree(ROOT / "docs" / "your-data", tmp_path / "docs" / "your-data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    port = _free_port()
    *offline, serve, online = [[a.replace("8000", str(port)) for a in argv] for argv in _walkthrough()]
    for argv in offline:
        assert main(argv[1:]) == 0, " ".join(argv)

    manifest = json.loads(Path("runs/my-corpus/_manifest.json").read_text())
    assert manifest["n_out"] >= 1 and manifest["input_errors"] == 0
    summary = json.loads(Path("runs/my-rl/summary.json").read_text())
    assert summary["steps"] == 2 and summary["settings"]["envs"] == ["data/items"]
    assert summary["heldout_items"] == 4  # the 4 rows marked heldout
    results = json.loads(Path("runs/my-eval/results.json").read_text())
    assert results["tasks"]["data/items"]["n_items"] == 12  # eval scores every row of the file
    assert results["settings"]["sampling"]["max_new_tokens"] == 16 and results["settings"]["enable_thinking"] is False

    # `opens1 serve`: uvicorn.run is replaced by a server in a thread, against which the last
    # documented line (eval over the OpenAI API, model name from /v1/models) runs.
    seen = {}

    def run_in_thread(app, host, port, log_level):
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        deadline = time.time() + 60
        while not server.started:
            assert time.time() < deadline and th.is_alive(), "the server did not start"
            time.sleep(0.05)
        try:
            seen["rc"] = main(online[1:])
        finally:
            server.should_exit = True
            th.join(20)

    monkeypatch.setattr(uvicorn, "run", run_in_thread)
    assert main(serve[1:]) == 0
    assert seen["rc"] == 0
    api = json.loads(Path("runs/my-eval-api/results.json").read_text())
    assert api["tasks"]["data/items"]["n_items"] == 4 and api["settings"]["model"] == "my-s1"
