"""Loading a model for serving: the context and names, generation_config.json's defaults,
and a saved checkpoint served as saved."""

import os

import openai
import pytest
import torch

import opens1
from opens1.serve.load import build_state, load_for_serving, serve_defaults
from opens1.serve.server import BackgroundServer

REAL_GENERATION_CONFIG = os.path.join(os.path.dirname(__file__), "..", "tokenizer", "data", "interns1", "generation_config.json")

# a hung server or engine must fail the test, not stall the suite
pytestmark = pytest.mark.timeout(120)


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
