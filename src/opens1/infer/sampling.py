"""Batched next-token sampling: temperature, top-k, top-p (nucleus) and min-p.

`sample(logits [B, V], temperature, top_k, top_p, min_p, generator) -> LongTensor[B]`

Every knob is either a Python number (same for all rows) or a tensor [B] (one
value per row, as a continuous-batching server needs). A row with temperature 0
is greedy (argmax). Filters apply in vLLM's order: temperature, then top-k, then
top-p on the renormalised top-k distribution, then min-p (relative to the most
likely token, so it is unaffected by the renormalisation). Off values: top_k <= 0,
top_p >= 1, min_p <= 0.
"""

from __future__ import annotations

import torch

Knob = float | int | torch.Tensor


def _per_row(x: Knob, B: int, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(x, device=device, dtype=dtype)
    return t.expand(B) if t.dim() == 0 else t


def _is_const(x: Knob, value) -> bool:
    return not isinstance(x, torch.Tensor) and x == value


def sample(logits: torch.Tensor, temperature: Knob = 1.0, top_k: Knob = 0, top_p: Knob = 1.0,
           min_p: Knob = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    if logits.dim() != 2:
        raise ValueError(f"sample() wants logits [B, V], got shape {tuple(logits.shape)}")
    B, V = logits.shape
    if _is_const(temperature, 0) or _is_const(temperature, 0.0):
        return logits.argmax(dim=-1)
    dev = logits.device
    temp = _per_row(temperature, B, dev, torch.float32)
    if (temp < 0).any():
        raise ValueError("temperature must be >= 0")
    greedy = temp == 0
    x = logits.float() / torch.where(greedy, torch.ones_like(temp), temp)[:, None]

    filtering = not (_is_const(top_k, 0) and _is_const(top_p, 1.0) and _is_const(min_p, 0.0))
    if filtering:
        x = _filter(x, _per_row(top_k, B, dev, torch.long), _per_row(top_p, B, dev, torch.float32),
                    _per_row(min_p, B, dev, torch.float32))
    drawn = draw(torch.softmax(x, dim=-1), generator)
    return torch.where(greedy, logits.argmax(dim=-1), drawn)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of probs [B, V], by inverse transform: the first index whose
    cumulative probability exceeds u * total, u uniform in [0, 1). One random number per
    row; torch.multinomial draws an exponential for every vocabulary entry instead (on CPU
    6.8 ms for [32, 13.9k] against 0.19 ms here, and it was half of an RL rollout's time).
    The float32 cumsum is monotone, so zero-probability entries are never drawn."""
    cdf = probs.float().cumsum(dim=-1)  # [B, V]
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def _filter(x: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Set filtered logits to -inf. One sort serves all three filters."""
    B, V = x.shape
    sorted_x, order = x.sort(dim=-1, descending=True)
    rank = torch.arange(V, device=x.device)[None, :]
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
    remove = rank >= k[:, None]  # top-k
    sorted_x = sorted_x.masked_fill(remove, float("-inf"))
    probs = torch.softmax(sorted_x, dim=-1)
    # top-p: drop a token once the mass strictly before it already reaches p
    before = probs.cumsum(dim=-1) - probs
    remove |= before >= top_p[:, None]
    # min-p: drop tokens less likely than min_p times the best one
    remove |= probs < (min_p[:, None] * probs[:, :1])
    remove[:, 0] = False  # always keep the most likely token
    sorted_x = sorted_x.masked_fill(remove, float("-inf"))
    return torch.full_like(x, float("-inf")).scatter(1, order, sorted_x)
