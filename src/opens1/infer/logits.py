"""Per-request logits processing for a batched decode step, each piece only on the rows
that ask for it, so other rows pay nothing: the vocabulary mask, vLLM's repetition /
presence / frequency penalties, constraints (constrained decoding, a reasoning budget),
the logprobs of the chosen tokens, and sampling with per-row knobs.

    logits [B, V] -> mask_vocab -> (chosen_logprobs: the raw distribution's) ->
    penalize_and_constrain -> sample_rows -> next ids [B]
"""

from __future__ import annotations

import torch

from opens1.infer.requests import GenerationRequest
from opens1.infer.sampling import SamplingParams, apply_penalties, sample, token_counts


def mask_vocab(reqs: list[GenerationRequest], logits: torch.Tensor, valid_vocab_size: int | None) -> torch.Tensor:
    """-inf past the tokenizer (`valid_vocab_size`, engine-wide) and past each request's vocab_limit."""
    V = logits.shape[-1]
    limits = [min(valid_vocab_size or V, r.params.vocab_limit or V) for r in reqs]
    if min(limits) >= V:
        return logits
    lim = torch.tensor(limits, device=logits.device)
    return logits.masked_fill(torch.arange(V, device=logits.device)[None, :] >= lim[:, None], float("-inf"))

def penalize_and_constrain(reqs: list[GenerationRequest], logits: torch.Tensor) -> torch.Tensor:
    """Penalties and constraints, on the rows that have them (the others are untouched)."""
    pen = [i for i, r in enumerate(reqs) if r.params.penalized]
    con = [i for i, r in enumerate(reqs) if r.constraint is not None]
    if not pen and not con:
        return logits
    logits = logits.clone()
    V = logits.shape[-1]
    if pen:
        idx = torch.tensor(pen, device=logits.device)
        rows = [reqs[i] for i in pen]
        for r in rows:
            if r.prompt_seen is None:  # once per request; the counts then grow token by token
                r.prompt_seen = token_counts([r.prompt_ids], V, logits.device)[0] > 0
                r.output_counts = token_counts([r.output_ids], V, logits.device)[0]
        seen = torch.stack([r.prompt_seen for r in rows])  # [b, V]
        counts = torch.stack([r.output_counts for r in rows])  # [b, V]
        knob = lambda name: torch.tensor([getattr(r.params, name) for r in rows], device=logits.device)
        logits[idx] = apply_penalties(logits[idx], seen, counts, repetition=knob("repetition_penalty"),
                                      presence=knob("presence_penalty"), frequency=knob("frequency_penalty"))
    for i in con:
        allowed = reqs[i].constraint.mask(V)  # [k <= V] bool, or None
        if allowed is None:
            continue
        k = allowed.shape[0]
        logits[i, :k].masked_fill_(~allowed.to(logits.device, non_blocking=True), float("-inf"))
        logits[i, k:] = float("-inf")
        if bool(logits[i].max() == float("-inf")):  # nothing allowed, or only ids the vocabulary mask removed
            raise RuntimeError("the constraint allows no token the tokenizer has")
    return logits

def chosen_logprobs(reqs: list[GenerationRequest], logits: torch.Tensor, next_ids: torch.Tensor):
    """Raw-distribution logprobs of the chosen tokens [B] and the top k (values, ids),
    computed for the whole batch at once; (None, None) when no row asked for them."""
    if all(r.params.logprobs is None for r in reqs):
        return None, None
    lp = torch.log_softmax(logits, dim=-1)  # [B, V]
    chosen = lp.gather(1, next_ids[:, None]).squeeze(1).tolist()
    k = max(r.params.logprobs or 0 for r in reqs)
    if k == 0:
        return chosen, None
    top = torch.topk(lp, k, dim=-1)  # [B, k], sorted
    return chosen, (top.values.tolist(), top.indices.tolist())

def sample_rows(reqs: list[GenerationRequest], logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row. Unseeded rows are drawn together, with per-row knobs as
    tensors [B]; a seeded row is drawn alone from its own generator, so what it
    gets does not depend on which other requests share the batch."""
    out = torch.empty(len(reqs), dtype=torch.long, device=logits.device)
    shared = [i for i, r in enumerate(reqs) if r.generator is None]
    # top-k rows and unrestricted rows go separately: only the former can be narrowed
    for rows in ([i for i in shared if reqs[i].params.top_k > 0], [i for i in shared if reqs[i].params.top_k <= 0]):
        if rows:
            idx = torch.tensor(rows, device=logits.device)
            out[idx] = _draw(logits[idx], [reqs[i].params for i in rows], generator)
    for i, r in enumerate(reqs):
        if r.generator is not None:
            out[i] = _draw(logits[i : i + 1], [r.params], r.generator)[0]
    return out


def _draw(logits: torch.Tensor, params: list[SamplingParams], generator: torch.Generator) -> torch.Tensor:
    """Sample rows of logits [B, V] with per-row knobs -> token ids [B].

    When every row has a top-k, only the top max(k) candidates are handed to `sample`:
    top-k comes first in its filter order, and temperature does not change the ranking,
    so the distribution is exactly the same, but sorting ~50 candidates instead of the
    whole vocabulary makes sampling cheap next to the forward (it dominated a batched
    decode step on CPU)."""
    dev = logits.device
    V = logits.shape[-1]
    top_k = [min(p.top_k, V) for p in params]  # past the vocabulary: every token (and no int64 overflow)
    knob = lambda name, dt: torch.tensor([getattr(p, name) for p in params], dtype=dt, device=dev)
    kw = dict(temperature=knob("temperature", torch.float32), top_k=torch.tensor(top_k, dtype=torch.long, device=dev),
              top_p=knob("top_p", torch.float32), min_p=knob("min_p", torch.float32), generator=generator)
    k_max = max(top_k)
    if min(top_k) > 0 and k_max < V:
        vals, cand = logits.topk(k_max, dim=-1)  # [B, k_max], sorted
        return cand.gather(1, sample(vals, **kw)[:, None]).squeeze(1)
    return sample(logits, **kw)
