"""Generation backends for evaluation: a local OpenS1 model or an OpenAI-compatible endpoint.

Both expose `generate(list_of_messages, n, sampling, enable_thinking=True) -> list[list[str]]`
(n texts per conversation; `sampling` an `opens1.infer.SamplingParams`, by default
`EVAL_SAMPLING`) and `template_hash` (what chat template rendered the prompts;
scores from different templates are not comparable, a common reason published
numbers cannot be reproduced).

Reasoning is kept in the text as `<think>...</think>answer` in both backends, so
one extraction rule (grade only after `</think>`) applies everywhere: an
endpoint that returns `reasoning_content` separately is re-joined that way.
"""

from __future__ import annotations

import hashlib

import torch

from opens1.infer.batch import generate_batch
from opens1.infer.sampling import SamplingParams
from opens1.models.checkpoint import load_model
from opens1.processing.processor import Processor
from opens1.tokenizer import load_tokenizer
from opens1.tokenizer.chat import TEMPLATE_HASH

# Intern-S1's evaluation protocol: sampled decoding (temperature 0.7; 0.8 for the mini
# model), top_p 1.0, top_k 50, up to 1024 new tokens, a fixed seed; thinking on (a prompt
# option: the backends' enable_thinking).
EVAL_SAMPLING = SamplingParams(max_new_tokens=1024, temperature=0.7, top_p=1.0, top_k=50, seed=0)


def _jsonable_messages(messages: list[dict]) -> list[dict]:
    """Messages with image objects replaced by a placeholder (for endpoints and logs)."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [({"type": "image", "image": "<image>"} if p.get("type") == "image" else p) for p in content]
        out.append({**m, "content": content})
    return out


class EndpointBackend:
    """Any OpenAI-compatible chat endpoint (vLLM, SGLang, LMDeploy, `opens1 serve`)."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str = "EMPTY", timeout: float = 600.0):
        from openai import OpenAI  # the [api] extra

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)
        # No name: the endpoint's first served model (`opens1 serve` and vLLM list theirs).
        self.model = model or self.client.models.list().data[0].id
        # The server owns the template; record what we know about it.
        self.template_hash = "endpoint:" + hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:16]

    def _one(self, messages: list[dict], n: int, s: SamplingParams, *, enable_thinking: bool) -> list[str]:
        texts: list[str] = []
        seed = s.seed or 0
        while len(texts) < n:  # some servers ignore n > 1: ask again for the rest
            resp = self.client.chat.completions.create(
                model=self.model, messages=_jsonable_messages(messages), n=n - len(texts),
                temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, seed=seed + len(texts),
                extra_body={"top_k": s.top_k, "chat_template_kwargs": {"enable_thinking": enable_thinking}})
            if not resp.choices:
                raise RuntimeError("endpoint returned no choices")
            for ch in resp.choices:
                content = ch.message.content or ""
                # vLLM/SGLang return reasoning separately; the openai client keeps unknown
                # fields in model_extra.
                extra = getattr(ch.message, "model_extra", None) or {}
                reasoning = getattr(ch.message, "reasoning_content", None) or extra.get("reasoning_content")
                texts.append(f"<think>{reasoning}</think>{content}" if reasoning else content)
        return texts[:n]

    def generate(self, conversations: list[list[dict]], n: int, sampling: SamplingParams = EVAL_SAMPLING,
                 *, enable_thinking: bool = True) -> list[list[str]]:
        return [self._one(msgs, n, sampling, enable_thinking=enable_thinking) for msgs in conversations]


class LocalBackend:
    """An OpenS1 checkpoint run in-process, with batched generation (`opens1.infer.batch`):
    text prompts and their n samples share left-padded batches; image/series prompts
    batch their n samples."""

    def __init__(self, model_dir: str | None = None, device: str | None = None, dtype=None,
                 tokenizer_path: str | None = None, *, model=None, tokenizer=None, batch_size: int = 32):
        if model is None:
            if model_dir is None:
                raise ValueError("LocalBackend needs a model directory or a model object")
            model = load_model(model_dir, dtype=dtype, device=device)
            tokenizer = load_tokenizer(tokenizer_path or model_dir)
        if tokenizer is None:
            raise ValueError("LocalBackend(model=...) also needs tokenizer=...")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = Processor(tokenizer, model.config)
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        self.template_hash = "opens1:" + TEMPLATE_HASH[:16]

    def _inputs(self, messages, *, enable_thinking: bool) -> dict:
        enc = self.processor(messages, enable_thinking=enable_thinking)
        out = {"input_ids": enc["input_ids"].to(self.device)}
        if enc.get("pixel_values") is not None:
            out["pixel_values"] = enc["pixel_values"].to(self.device)
        if enc.get("time_series"):
            out["time_series"] = [x.to(self.device) for x in enc["time_series"]]
            out["sampling_rates"] = enc.get("sampling_rates")
        return out

    def generate(self, conversations: list[list[dict]], n: int, sampling: SamplingParams = EVAL_SAMPLING,
                 *, enable_thinking: bool = True) -> list[list[str]]:
        tok = self.tokenizer
        gen = torch.Generator(device=self.device).manual_seed(sampling.seed or 0)
        eos = () if tok.eos_token_id is None else (tok.eos_token_id,)
        s = sampling.replace(stop_token_ids=tuple(dict.fromkeys(sampling.stop_token_ids + eos)),
                             vocab_limit=sampling.vocab_limit or len(tok))
        prompts = [self._inputs(m, enable_thinking=enable_thinking) for m in conversations]
        if tok.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token id: batched prompts are padded with it")
        outs = generate_batch(self.model, prompts, n, s, pad_token_id=tok.pad_token_id, generator=gen,
                              max_batch=self.batch_size)
        # drop the final eos; keep <think> tags: graders read only what follows </think>
        return [[tok.decode(ids[:-1] if fin else ids, skip_special_tokens=False) for ids, fin in samples]
                for samples in outs]
