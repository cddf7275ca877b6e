"""Live servers on loopback for the API tests.

- `tiny`: `opens1 serve --model tiny`'s state (random tiny S1 with vision and time
  series, the bundled tokenizer and processor) behind uvicorn in a thread.
- `scripted`: the same API, tokenizer and processor over a model that writes a fixed
  reply (reasoning, content, an Intern-S1 tool call, end of turn), so that parsing,
  streaming splits and stop strings can be checked exactly. Random weights cannot
  produce a tool call; this is the smallest model that can.
"""

from __future__ import annotations

import dataclasses

import openai
import pytest
import torch
from torch import nn

from opens1.config import get_preset
from opens1.infer.engine import Engine
from opens1.serve.load import build_state
from opens1.serve.server import BackgroundServer

SCRIPT = [
    "The user wants the weather, so I call the tool.\n", "</think>", "\n\nLet me check the weather in Paris.",
    "<|action_start|>", "<|plugin|>", '\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n',
    "<|action_end|>", "<|im_end|>",
]


def script_ids(tok) -> list[int]:
    ids = []
    for piece in SCRIPT:
        ids += [tok.token_to_id(piece)] if piece in tok.special_tokens else tok.encode(piece)
    return ids


class ScriptedLM(nn.Module):
    """Same forward signature as S1ForConditionalGeneration; its logits make the
    script's k-th token the k-th generated one (then a filler token forever).
    It keeps the KV cache's bookkeeping (prepare) like a real model does."""

    def __init__(self, config, script: list[int], filler: int):
        super().__init__()
        self.config = config
        self.lm_head = nn.Linear(1, 1, bias=False)  # device/dtype anchor for KVCache.for_model
        self.script, self.filler = script, filler
        self.prompt_len: dict[int, int] = {}

    def forward(self, input_ids, attention_mask=None, position_ids=None, kv_cache=None, cache_rows=None, logits_to_keep=0, **_):
        B, T = input_ids.shape
        plan = kv_cache.prepare(attention_mask, T, cache_rows)
        pos = plan.position_ids[:, -1] if position_ids is None else position_ids[:, -1]
        logits = torch.full((B, 1, self.config.text.vocab_size), -1e4)
        for b, row in enumerate(cache_rows.tolist()):
            if position_ids is None:  # prefill (maybe left padded): remember where the reply starts
                self.prompt_len[row] = T if attention_mask is None else int(attention_mask[b].sum())
            k = int(pos[b]) - self.prompt_len[row] + 1  # index of the token to produce
            logits[b, 0, self.script[k] if k < len(self.script) else self.filler] = 0.0
        return type("Out", (), {"logits": logits})()


@pytest.fixture(scope="session")
def tiny_state():
    torch.set_num_threads(1)
    state = build_state("tiny", max_seq_len=384, max_batch_size=4, start=True, cpu_workers=1)
    state.max_body_bytes = 2 * 1024 * 1024  # small, so the oversize test sends little
    yield state
    state.close()
    state.engine.shutdown()


@pytest.fixture(scope="session")
def tiny(tiny_state):
    with BackgroundServer(tiny_state, own_engine=False) as url:
        yield url


@pytest.fixture(scope="session")
def client(tiny):
    return openai.OpenAI(base_url=tiny + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def scripted(tiny_state):
    tok = tiny_state.tokenizer
    cfg = get_preset("debug")
    cfg.vision = cfg.timeseries = None
    cfg.text.vocab_size = tiny_state.vocab_size
    model = ScriptedLM(cfg, script_ids(tok), filler=tok.encode("a")[0])
    engine = Engine(model, eos_token_ids=tiny_state.engine.eos_token_ids, max_batch_size=2, max_seq_len=512).start()
    state = dataclasses.replace(tiny_state, engine=engine, model_name="scripted", supports_images=False, supports_series=False)
    with BackgroundServer(state) as url:
        yield url, state


@pytest.fixture(scope="session")
def scripted_client(scripted):
    return openai.OpenAI(base_url=scripted[0] + "/v1", api_key="unused", max_retries=0, timeout=60)
