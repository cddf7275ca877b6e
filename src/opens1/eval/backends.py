"""Generation backends for evaluation: a local OpenS1 model or an OpenAI-compatible endpoint.

Both expose `generate(list_of_messages, n, sampling) -> list[list[str]]` (n texts
per conversation) and `template_hash` (what chat template rendered the prompts;
scores from different templates are not comparable, a common reason published
numbers cannot be reproduced).

Reasoning is kept in the text as `<think>...</think>answer` in both backends, so
one extraction rule (grade only after `</think>`) applies everywhere: an
endpoint that returns `reasoning_content` separately is re-joined that way.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sampling:
    """Intern-S1's evaluation protocol: thinking on, sampled decoding (temperature
    0.7; 0.8 for the mini model), top_p 1.0, top_k 50."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 50
    max_tokens: int = 1024
    enable_thinking: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_tokens < 1:
            raise ValueError(f"invalid sampling parameters: {self}")

    def to_dict(self) -> dict:
        return asdict(self)



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

    def __init__(self, base_url: str, model: str = "default", api_key: str = "EMPTY", timeout: float = 600.0):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)
        self.model = model
        # The server owns the template; record what we know about it.
        self.template_hash = "endpoint:" + hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:16]

    def _one(self, messages: list[dict], n: int, s: Sampling) -> list[str]:
        texts: list[str] = []
        while len(texts) < n:  # some servers ignore n > 1: ask again for the rest
            resp = self.client.chat.completions.create(
                model=self.model, messages=_jsonable_messages(messages), n=n - len(texts),
                temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed + len(texts),
                extra_body={"top_k": s.top_k, "chat_template_kwargs": {"enable_thinking": s.enable_thinking}})
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

    def generate(self, conversations: list[list[dict]], n: int, sampling: Sampling) -> list[list[str]]:
        return [self._one(msgs, n, sampling) for msgs in conversations]


class LocalBackend:
    """An OpenS1 checkpoint run in-process, with batched generation (`opens1.infer.batch`):
    text prompts and their n samples share left-padded batches; image/series prompts
    batch their n samples."""

    def __init__(self, model_dir: str | None = None, device: str | None = None, dtype=None,
                 tokenizer_path: str | None = None, *, model=None, tokenizer=None, batch_size: int = 32):
        import opens1
        from opens1.tokenizer.chat import TEMPLATE_HASH

        if model is None:
            if model_dir is None:
                raise ValueError("LocalBackend needs a model directory or a model object")
            model = opens1.load_model(model_dir, dtype=dtype, device=device)
            tokenizer = opens1.load_tokenizer(tokenizer_path or model_dir)
        if tokenizer is None:
            raise ValueError("LocalBackend(model=...) also needs tokenizer=...")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = opens1.Processor(tokenizer, model.config)
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        self.template_hash = "opens1:" + TEMPLATE_HASH[:16]

    def _inputs(self, messages, sampling) -> dict:
        enc = self.processor(messages, enable_thinking=sampling.enable_thinking)
        out = {"input_ids": enc["input_ids"].to(self.device)}
        if enc.get("pixel_values") is not None:
            out["pixel_values"] = enc["pixel_values"].to(self.device)
        if enc.get("time_series"):
            out["time_series"] = [x.to(self.device) for x in enc["time_series"]]
            out["sampling_rates"] = enc.get("sampling_rates")
        return out

    def generate(self, conversations: list[list[dict]], n: int, sampling: Sampling) -> list[list[str]]:
        import torch

        from opens1.infer.batch import BatchSampling, generate_batch

        tok = self.tokenizer
        gen = torch.Generator(device=self.device).manual_seed(sampling.seed)
        bs = BatchSampling(max_new_tokens=sampling.max_tokens, temperature=sampling.temperature,
                           top_k=sampling.top_k, top_p=sampling.top_p, eos_token_id=tok.eos_token_id,
                           vocab_limit=len(tok))
        prompts = [self._inputs(m, sampling) for m in conversations]
        outs = generate_batch(self.model, prompts, n, bs, tok.pad_token_id, gen, self.batch_size)
        # drop the final eos; keep <think> tags: graders read only what follows </think>
        return [[tok.decode(ids[:-1] if fin else ids, skip_special_tokens=False) for ids, fin in samples]
                for samples in outs]
