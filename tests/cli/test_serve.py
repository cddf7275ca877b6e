"""`opens1 serve` as a user runs it: argument errors, documented command lines, and a real
server process."""

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

import opens1.cli.serve as cli
from opens1.cli.serve import main
from opens1.serve.load import build_state
from opens1.serve.server import free_port

# a hung server or engine must fail the test, not stall the suite
pytestmark = pytest.mark.timeout(120)



def _wait_healthy(url: str, seconds: float = 90) -> None:
    """Poll /health until the server subprocess answers (its start-up builds the model)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)

def test_unknown_model_is_a_clear_error(capsys):
    assert main(["--model", "no-such-preset-or-dir"]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err


def test_bad_arguments_exit_with_usage():
    for bad in (["--max-batch-size", "0"], ["--max-num-seqs", "0"], ["--cpu-workers", "-1"], ["--max-series-values", "0"],
                ["--max-model-len", "1"], ["--max-model-len", "64", "--max-seq-len", "128"], ["--model", "debug"]):
        with pytest.raises(SystemExit) as e:
            main(["tiny", *bad])
        assert e.value.code == 2, bad
    with pytest.raises(SystemExit):
        main([])  # no model at all


def test_vllm_style_arguments(monkeypatch, caplog):
    seen = {}

    def fake_build_state(model, **kw):
        seen.update(kw, model=model)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "build_state", fake_build_state)
    assert main(["runs/speedrun/model", "--max-model-len", "1024", "--max-num-seqs", "8",
                 "--served-model-name", "s1-tiny", "s1", "--special-tokens-in-content", "--generation-config", "opens1"]) == 2
    assert (seen["model"], seen["max_seq_len"], seen["max_batch_size"], seen["served_name"]) == \
        ("runs/speedrun/model", 1024, 8, ["s1-tiny", "s1"])
    assert seen["special_tokens_in_content"] is True and seen["generation_config"] == "opens1"
    # the flag spellings of today and of vLLM are the same options
    assert main(["--model", "tiny", "--max-batch-size", "4"]) == 2
    assert (seen["model"], seen["max_batch_size"], seen["max_seq_len"], seen["served_name"]) == ("tiny", 4, None, None)
    with caplog.at_level("WARNING", logger="opens1.serve"):
        assert main(["tiny", "--max-seq-len", "256"]) == 2
    assert seen["max_seq_len"] == 256 and "deprecated" in caplog.text
    assert main(["tiny", "--model", "tiny"]) == 2 and seen["model"] == "tiny"  # the same model twice is fine


def test_limit_and_host_flags(capsys):
    # parsed (the run then stops at the unknown model), and passed through to the server state
    flags = ["--cpu-workers", "0", "--allowed-hosts", "gpu-box.lab, *.lab.example", "--chars-per-token", "8",
             "--max-request-pixels", "1000000", "--max-series-values", "5000"]
    assert main(["--model", "no-such-preset-or-dir", *flags]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err
    state = build_state("tiny", max_seq_len=128, start=False, cpu_workers=0, host="0.0.0.0",
                        allowed_hosts=("gpu-box.lab",), chars_per_token=8, max_request_pixels=10**6, max_series_values=5000)
    assert (state.cpu_workers, state.bind_host, state.allowed_hosts) == (0, "0.0.0.0", ("gpu-box.lab",))
    assert (state.prompt_char_limit, state.max_request_pixels, state.max_series_values) == (128 * 8, 10**6, 5000)


@pytest.mark.slow
def test_serve_subprocess_with_api_key():
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opens1", "serve", "--model", "tiny", "--port", str(port), "--api-key", "k",
         "--max-seq-len", "256", "--max-batch-size", "2", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert r.usage.completion_tokens >= 1
        assert httpx.get(url + "/v1/models").status_code == 401  # the key is enforced
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.slow
def test_done_when_vllm_habits_end_to_end():
    """`opens1 serve tiny --max-model-len 1024 --max-num-seqs 8 --served-model-name s1-tiny`
    in a subprocess: schema-valid JSON from the official client (thinking on and off,
    temperature 1), /metrics through prometheus_client's parser, /tokenize and /detokenize."""
    import json

    import jsonschema
    from prometheus_client.parser import text_string_to_metric_families

    from opens1 import load_tokenizer

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opens1", "serve", "tiny", "--port", str(port), "--max-model-len", "1024",
         "--max-num-seqs", "8", "--served-model-name", "s1-tiny", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    schema = {"type": "object", "properties": {"element": {"enum": ["H", "He", "Li", "C", "O"]},
                                               "phase": {"enum": ["solid", "liquid", "gas"]}},
              "required": ["element", "phase"], "additionalProperties": False}
    try:
        _wait_healthy(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list().data] == ["s1-tiny"]
        assert client.models.list().data[0].model_extra["max_model_len"] == 1024
        served = 0
        for thinking in (True, False):
            r = client.chat.completions.create(
                model="s1-tiny", messages=[{"role": "user", "content": "Name an element and its phase at room temperature."}],
                max_tokens=256, temperature=1,
                response_format={"type": "json_schema", "json_schema": {"name": "element", "schema": schema, "strict": True}},
                extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
            jsonschema.validate(json.loads(r.choices[0].message.content), schema)
            served += r.usage.completion_tokens
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}
        value = lambda fam, suffix: sum(s.value for s in families[fam].samples if s.name == fam + suffix)
        assert value("opens1:request_success", "_total") == 2
        assert value("opens1:generation_tokens", "_total") == served
        assert value("opens1:e2e_request_latency_seconds", "_count") == 2
        tok = load_tokenizer()
        text = "Caffeine, Cn1cnc2c1c(=O)n(C)c(=O)n2C, in <|im_start|>ChatML<|im_end|>"
        t = httpx.post(url + "/tokenize", json={"model": "s1-tiny", "prompt": text}).json()
        assert t["tokens"] == tok.encode(text, split_special_tokens=False) and t["max_model_len"] == 1024
        assert httpx.post(url + "/detokenize", json={"model": "s1-tiny", "tokens": t["tokens"]}).json()["prompt"] == text
    finally:
        proc.terminate()
        proc.wait(20)


# ---------------------------------------------------------------- documented command lines

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def documented(prefix: str) -> list[str]:
    """Command lines starting with `prefix` in README.md and docs/serving.md (console `$ `
    prompts and bash blocks; `\\` continuations joined; comments dropped)."""
    import re

    lines = []
    for name in ("README.md", os.path.join("docs", "serving.md")):
        text = open(os.path.join(ROOT, name), encoding="utf-8").read().replace("\\\n", " ")
        for block in re.findall(r"```(?:console|bash)\n(.*?)```", text, re.S):
            for line in block.splitlines():
                line = line.removeprefix("$ ").strip()
                if line.startswith(prefix):
                    lines.append(line)
    return lines


def test_documented_serve_commands_parse(monkeypatch):
    import shlex

    seen = []
    monkeypatch.setattr(cli, "build_state", lambda model, **kw: seen.append((model, kw)) or (_ for _ in ()).throw(ValueError("parsed")))
    commands = documented("opens1 serve")
    assert len(commands) >= 5
    for line in commands:
        argv = shlex.split(line, comments=True)
        assert main(argv[2:]) == 2, line  # parsed, then stopped at build_state
    assert ("tiny", 1024, 8, ["s1-tiny"]) in [(m, kw["max_seq_len"], kw["max_batch_size"], kw["served_name"]) for m, kw in seen]


def test_documented_bench_line_parses():
    import importlib.util
    import shlex

    spec = importlib.util.spec_from_file_location("bench_serve", os.path.join(ROOT, "bench", "serve_throughput.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines = [line for line in documented("python bench/serve_throughput.py")] + [
        "python bench/serve_throughput.py --clients 4 --max-tokens 32 --structured-requests 8"]
    for line in lines:
        args = mod.build_parser().parse_args(shlex.split(line, comments=True)[2:])
        assert args.clients >= 1
    assert "--structured-requests 8" in open(os.path.join(ROOT, "docs", "serving.md")).read()
