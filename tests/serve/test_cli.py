"""`opens1 serve` as a user runs it: argument errors, and a real server process."""

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

import torch

from opens1.serve.cli import BackgroundServer, build_state, free_port, load_for_serving, main

# a hung server or engine must fail the test, not stall the suite
pytestmark = pytest.mark.timeout(120)


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["--model", "no-such-preset-or-dir"]) == 2
    assert "neither a checkpoint directory nor a preset" in capsys.readouterr().err


def test_bad_arguments_exit_with_usage():
    for bad in (["--max-batch-size", "0"], ["--cpu-workers", "-1"], ["--max-series-values", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["--model", "tiny", *bad])
        assert e.value.code == 2, bad


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
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
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
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    state = build_state(str(ckpt), max_seq_len=256, max_batch_size=2)
    assert state.model_name == "my-s1"
    msgs = [{"role": "user", "content": "What is aspirin?"}]
    with BackgroundServer(state) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model="my-s1", messages=msgs, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    # the served answer is the saved weights' greedy continuation
    ids = state.processor(msgs)["input_ids"]
    ref = []
    with torch.no_grad():
        for _ in range(6):  # greedy, never choosing the vocabulary's padding ids (as the server)
            logits = model(ids).logits[0, -1, : len(tok)]
            ref.append(int(logits.argmax()))
            ids = torch.cat([ids, torch.tensor([[ref[-1]]])], dim=1)
    assert r.usage.completion_tokens == 6
    assert r.choices[0].message.reasoning_content == tok.decode(ref).strip("\n")
