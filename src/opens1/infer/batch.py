"""Offline batched generation for many prompts at once (evaluation, RL rollouts).

    generate_batch(model, prompts, n, sampling, pad_token_id, generator) -> per prompt, n (ids, finished)

A prompt is the processor's output for one chat (`input_ids` LongTensor[1, T], and for
multimodal prompts `pixel_values`, `time_series`, `sampling_rates`). Text-only prompts
and their n samples are batched together with left padding through `model.generate`
(one prefill, then KV-cache decode steps). Multimodal prompts run one at a time with
their n samples batched, since their image tiles and series differ. The online server
uses the continuous-batching `engine.py` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchSampling:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    eos_token_id: int | list[int] | None = None
    vocab_limit: int | None = None  # len(tokenizer): padded embedding rows are never sampled


def eos_set(eos) -> set[int]:
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def cut_at_eos(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """New tokens up to and including the first eos; (ids, whether an eos ended them)."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1], True
    return ids, False


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths -> (ids [B, W], attention mask [B, W]) padded on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def is_multimodal(prompt: dict) -> bool:
    return prompt.get("pixel_values") is not None or bool(prompt.get("time_series"))


def multimodal_inputs(prompt: dict) -> dict:
    """The prompt's images and series (the model's keyword arguments), without text fields."""
    return {k: prompt[k] for k in ("pixel_values", "time_series", "sampling_rates") if prompt.get(k) is not None}


def repeat_multimodal(extra: dict, n: int) -> dict:
    """Repeat one prompt's images and series for its n samples (the model splices them in order)."""
    mm = {}
    if extra.get("pixel_values") is not None:
        mm["pixel_values"] = extra["pixel_values"].repeat(n, 1, 1, 1)
    if extra.get("time_series"):
        mm["time_series"] = list(extra["time_series"]) * n
        mm["sampling_rates"] = list(extra.get("sampling_rates") or []) * n
    return mm


def _run(model, ids, mask, s: BatchSampling, generator, mm) -> torch.Tensor:
    return model.generate(
        ids, attention_mask=mask, max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_k=s.top_k,
        top_p=s.top_p, min_p=s.min_p, eos_token_id=s.eos_token_id, generator=generator,
        vocab_limit=s.vocab_limit, **mm,
    )


@torch.no_grad()
def generate_batch(model, prompts: list[dict], n: int, sampling: BatchSampling, pad_token_id: int = 0,
                   generator: torch.Generator | None = None, max_batch: int = 64) -> list[list[tuple[list[int], bool]]]:
    """n samples for every prompt: out[i][j] = (new token ids of sample j of prompt i, finished)."""
    eos = eos_set(sampling.eos_token_id)
    out: list[list[tuple[list[int], bool]]] = [[] for _ in prompts]
    rows = [(i, p["input_ids"][0].tolist()) for i, p in enumerate(prompts) if not is_multimodal(p) for _ in range(n)]
    for start in range(0, len(rows), max_batch):
        chunk = rows[start:start + max_batch]
        ids, mask = left_pad([r[1] for r in chunk], pad_token_id)
        seqs = _run(model, ids, mask, sampling, generator, {})
        for (i, _), seq in zip(chunk, seqs):
            out[i].append(cut_at_eos(seq[ids.shape[1]:].tolist(), eos))
    for i, p in enumerate(prompts):
        if not is_multimodal(p):
            continue
        ids = p["input_ids"].repeat(n, 1)
        seqs = _run(model, ids, torch.ones_like(ids), sampling, generator, repeat_multimodal(multimodal_inputs(p), n))
        out[i] = [cut_at_eos(seq[ids.shape[1]:].tolist(), eos) for seq in seqs]
    return out
