"""Offline batched generation for many prompts at once (evaluation, RL rollouts).

    generate_batch(model, prompts, n, sampling, *, pad_token_id, generator) -> per prompt, n (ids, finished)

A prompt is the processor's output for one chat (`input_ids` LongTensor[1, T], and for
multimodal prompts `pixel_values`, `time_series`, `sampling_rates`). Text-only prompts
and their n samples are batched together with left padding through `infer.generate`
(one prefill, then `decode_step`s against the KV cache). Multimodal prompts run one at a
time with their n samples batched, since their image tiles and series differ. A sequence
ends at `sampling.stop_token_ids` (e.g. the tokenizer's eos). The online server uses the
continuous-batching `engine.py` instead, with the same decode step.
"""

from __future__ import annotations

import torch

from opens1.infer.generate import generate
from opens1.infer.sampling import SamplingParams


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


def _run(model, ids, mask, s: SamplingParams, generator, mm) -> torch.Tensor:
    return generate(model, ids, s, attention_mask=mask, generator=generator, **mm)


@torch.no_grad()
def generate_batch(model, prompts: list[dict], n: int, sampling: SamplingParams, *, pad_token_id: int = 0,
                   generator: torch.Generator | None = None, max_batch: int = 64) -> list[list[tuple[list[int], bool]]]:
    """n samples for every prompt: out[i][j] = (new token ids of sample j of prompt i, finished:
    whether a stop token ended it)."""
    eos = set(sampling.stop_token_ids)
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
