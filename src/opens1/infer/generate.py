"""Generation: one prefill, then one decode step per token against a preallocated KV cache.

    generate(model, input_ids [B, T], sampling, *, attention_mask, ...) -> [B, T + n]
    decode_step(model, cache, tokens [B], *, rows, positions) -> logits [B, V]

`decode_step` is the model's own forward on one token per row; `generate`, batched
generation (infer/batch.py) and the continuous-batching engine (infer/engine.py) all
decode with it. Batches are left padded; the cache derives positions from the mask.

Compiled decode (`compile=True`, gpt-fast style): eager decoding of a small model is bound
by per-op overhead (a step of the `tiny` preset dispatches about a thousand ops for a few
hundred microseconds of arithmetic). With compile, the cache is static (every shape fixed
by the batch and a bucketed length, no host-side state touched in a step) and
`decode_step` itself goes through `torch.compile(fullgraph=True, dynamic=False)`: the
norms, RoPE, routing and SwiGLU fuse into a few kernels, the matmuls stay with the BLAS.
The code is specialised to (batch, bucketed cache length): a call with the same shapes
reuses it, another batch size or bucket compiles once more. Prefill stays eager (one big
forward, not overhead-bound). Numerics: the compiler may reorder float reductions, so
logits agree with eager decoding to ~1e-5, not bit for bit.

Ids the tokenizer lacks are never sampled: checkpoints pad the vocabulary (to a multiple
of 64, say) and nothing can decode those ids. The limit is `sampling.vocab_limit`, else
the model's `vocab_limit` attribute, which `load_model` sets from the checkpoint's own
tokenizer (`opens1.models.checkpoint.load.tokenizer_size`). Only those ids are masked, so greedy decoding of a trained
model is the same as transformers' (which never masks).
"""

from __future__ import annotations

import torch

from opens1.infer.kv_cache import KVCache
from opens1.infer.sampling import SamplingParams, apply_penalties, sample, vocab_mask

GREEDY = SamplingParams()


def decode_step(model, cache: KVCache, tokens: torch.Tensor, *, rows: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row: tokens [B] -> next-token logits [B, V]. rows [B]: the cache slots
    (continuous batching); positions [B]: rotary positions (default: from the cache)."""
    out = model(tokens[:, None], position_ids=None if positions is None else positions[:, None], kv_cache=cache,
                cache_rows=rows, logits_to_keep=1)
    return out.logits[:, -1]


_compiled_decode_step = None


def compiled_decode_step():
    """`decode_step` through torch.compile, made once per process (its code cache is keyed
    by the shapes and the model it sees). fullgraph: a graph break would silently bring
    the per-op overhead back."""
    global _compiled_decode_step
    if _compiled_decode_step is None:
        _compiled_decode_step = torch.compile(decode_step, fullgraph=True, dynamic=False)
    return _compiled_decode_step


def cache_length(n: int) -> int:
    """Cache slots for n tokens, rounded up to a power of two (at least 128): few distinct
    cache shapes, so compiled steps are reused across prompt lengths."""
    return max(128, 1 << (n - 1).bit_length())


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, sampling: SamplingParams = GREEDY, *, attention_mask=None,
             pixel_values=None, time_series=None, sampling_rates=None, generator: torch.Generator | None = None,
             pad_token_id: int | None = None, compile: bool = False) -> torch.Tensor:
    """Prompt [B, T] (left padded, with attention_mask, for batches) -> [B, T + n] with n <=
    sampling.max_new_tokens new tokens. A row ends at any of `sampling.stop_token_ids`; rows
    that ended early are filled with pad (pad_token_id, else the first stop id, else 0).
    generator: the random source (default: seeded from sampling.seed when it is set)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, T], got {tuple(input_ids.shape)}")
    if attention_mask is not None and not bool(attention_mask[:, -1].all()):
        raise ValueError("generate() needs left padding: the last position of every row must be a real token")
    if compile and (model.config.text.rope_scaling or {}).get("rope_type") == "dynamic":
        raise ValueError("compiled decode does not support dynamic NTK rope (its frequencies depend on length)")
    device = model.lm_head.weight.device
    input_ids = input_ids.to(device)
    B, T = input_ids.shape
    n_max = sampling.max_new_tokens
    stop = torch.tensor(sampling.stop_token_ids, dtype=torch.long, device=device) if sampling.stop_token_ids else None
    pad = pad_token_id if pad_token_id is not None else (sampling.stop_token_ids[:1] or (0,))[0]
    if generator is None and sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    if sampling.vocab_limit is None and getattr(model, "vocab_limit", None):
        sampling = sampling.replace(vocab_limit=int(model.vocab_limit))
    cache = KVCache.for_model(model, B, cache_length(T + n_max) if compile else T + n_max, static=compile)
    step = compiled_decode_step() if compile else decode_step
    am = None if attention_mask is None else attention_mask.to(device)
    out = model(input_ids, attention_mask=am, pixel_values=pixel_values, time_series=time_series,
                sampling_rates=sampling_rates, kv_cache=cache, logits_to_keep=1)
    logits = out.logits[:, -1]
    V = logits.shape[-1]
    new = torch.full((B, n_max), pad, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    seen = counts = None
    if sampling.penalized:  # the prompt's ids [B, V] (padding excluded) and the output's counts [B, V]
        real = torch.ones_like(input_ids, dtype=torch.bool) if am is None else am.bool()
        seen = torch.zeros(B, V, device=device).scatter_add_(1, torch.where(real, input_ids, 0), real.float()) > 0
        counts = torch.zeros(B, V, device=device)
    n = 0
    for i in range(n_max):
        if seen is not None:
            logits = apply_penalties(logits, seen, counts, repetition=sampling.repetition_penalty,
                                     presence=sampling.presence_penalty, frequency=sampling.frequency_penalty)
        tok = _next_token(logits, sampling, generator)
        if stop is not None:
            tok = torch.where(done, torch.full_like(tok, pad), tok)
            done |= torch.isin(tok, stop)
        new[:, i] = tok
        if counts is not None:
            # a finished row counts its pad too, but its later draws are discarded anyway
            counts.scatter_add_(1, tok[:, None], torch.ones(B, 1, device=device))
        n = i + 1
        if i + 1 == n_max or (stop is not None and bool(done.all())):
            break
        logits = step(model, cache, tok)
    return torch.cat([input_ids, new[:, :n]], dim=1)


def _next_token(logits: torch.Tensor, s: SamplingParams, generator) -> torch.Tensor:
    logits = vocab_mask(logits, s.vocab_limit)  # ids past the tokenizer (vocab padded to a multiple of 64)
    return sample(logits, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, generator=generator)
