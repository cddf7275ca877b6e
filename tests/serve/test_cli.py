"""`opens1 serve` as a user runs it: argument errors, and a real server process."""

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

import torch

import opens1
from opens1.serve.cli import BackgroundServer, build_state, free_port, load_for_serving, main

REAL_GENERATION_CONFIG = os.path.join(os.path.dirname(__file__), "..", "tokenizer", "data", "interns1", "generation_config.json")

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
    import opens1.serve.cli as cli

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


def test_context_defaults_to_the_model_config(tmp_path):
    state = build_state("tiny", start=False, cpu_workers=0)
    assert state.max_seq_len == state.engine.model.config.text.max_position_embeddings == 4096
    assert state.model_name == "tiny" and state.served_names == ("tiny",)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        build_state("tiny", max_seq_len=4097, start=False, cpu_workers=0)
    named = build_state("tiny", max_seq_len=128, served_name=["s1-tiny", "tiny"], start=False, cpu_workers=0)
    assert named.served_names == ("s1-tiny", "tiny")


def test_generation_config_sets_the_defaults(tmp_path):
    import json
    import shutil

    from opens1.serve.cli import serve_defaults

    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(REAL_GENERATION_CONFIG, real)  # internlm/Intern-S1-mini's
    d, eos = serve_defaults(str(real))
    assert eos == (151645,)  # the real file sets only its ids: Intern-S1's card defaults stay
    assert (d.sampling.temperature, d.sampling.top_p, d.sampling.top_k, d.max_tokens) == (0.7, 1.0, 50, None)
    mini = tmp_path / "mini"
    mini.mkdir()
    (mini / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 40, "repetition_penalty": 1.05,
         "max_new_tokens": 2048, "eos_token_id": [7, 9]}))
    d, eos = serve_defaults(str(mini))
    assert (d.sampling.temperature, d.sampling.top_p, d.sampling.top_k, d.sampling.repetition_penalty) == (0.8, 0.95, 40, 1.05)
    assert d.max_tokens == 2048 and eos == (7, 9)
    assert serve_defaults(str(mini), "opens1")[0].sampling.temperature == 0.7  # the file is not read
    assert serve_defaults("tiny", str(mini))[0].sampling.temperature == 0.8  # another directory's file
    with pytest.raises(FileNotFoundError):
        serve_defaults("tiny", str(tmp_path / "missing"))
    (mini / "generation_config.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ValueError, match="generation_config.json"):
        serve_defaults(str(mini))


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
        [sys.executable, "-m", "opens1.cli", "serve", "--model", "tiny", "--port", str(port), "--api-key", "k",
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
def test_serve_a_saved_checkpoint(tmp_path):
    # what a training run leaves behind: model + tokenizer in one directory
    model, tok, _ = load_for_serving("tiny-dense")
    ckpt = tmp_path / "my-s1"
    opens1.save_model(model, ckpt)
    tok.save_pretrained(ckpt)
    (ckpt / "generation_config.json").write_text('{"temperature": 0.5, "max_new_tokens": 40, "eos_token_id": 3}')
    state = build_state(str(ckpt), max_seq_len=256, max_batch_size=2)
    assert state.model_name == str(ckpt)  # the path as given, as vLLM serves it
    assert state.defaults.sampling.temperature == 0.5 and state.defaults.max_tokens == 40
    assert 3 in state.engine.eos_token_ids
    assert state.engine.model.vocab_limit == len(tok)
    msgs = [{"role": "user", "content": "What is aspirin?"}]
    with BackgroundServer(state) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model=str(ckpt), messages=msgs, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    # the served answer is the saved weights' greedy continuation
    ids = state.processor(msgs)["input_ids"]
    ref = []
    with torch.no_grad():
        for _ in range(6):  # greedy, never choosing the vocabulary's padding ids (as the server)
            logits = model(ids).logits[0, -1, : len(tok)]
            ref.append(int(logits.argmax()))
            ids = torch.cat([ids, torch.tensor([[ref[-1]]])], dim=1)
    assert r.usage.completion_tokens == 6
    # compared through the server's one chat parser (a random model may open <think> again)
    from opens1.tokenizer.chat import parse_response

    want = parse_response(tok.decode(ref), prompt_ends_in_think=True)
    assert (r.choices[0].message.reasoning_content or "") == (want.reasoning or "")


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
        [sys.executable, "-m", "opens1.cli", "serve", "tiny", "--port", str(port), "--max-model-len", "1024",
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

    import opens1.serve.cli as cli

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
