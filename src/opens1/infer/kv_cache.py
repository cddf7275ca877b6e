"""A preallocated key/value cache where every batch row is a slot with its own length.

Layout: `k`, `v` are [num_layers, B, n_kv_heads, max_len, head_dim]; `lengths` [B]
counts the slots each row has written; `valid` [B, max_len] says which written slots
hold real tokens (False for left padding or a freed row). Keys are stored after RoPE,
so a cached key never needs its position again.

One model forward with a cache does, in order (gpt-fast's protocol, plus per-row slots):
  1. `plan = cache.prepare(new_valid [b, T], T, rows)` (the model calls it once):
     reserves slots lengths[r] .. lengths[r]+T-1 for each row r, marks them
     valid/invalid, and returns the attention mask and positions to use;
  2. every attention layer calls `k_all, v_all = plan.update(layer, k, v)`: writes the
     new keys/values into the reserved slots and returns the slots to attend over.

Two modes, fixed when the cache is made:
  dynamic (default; eager decoding, serving): attention reads slots up to the longest
    row, tracked on the host, so a short context costs little in a long cache. When all
    rows share one length (generate) writes are slice assignments and a decode step with
    no padding holes needs no mask at all.
  static (`static=True`; compiled decode): every shape is fixed by (B, max_len) and no
    host-side state is read or written during a forward: the next slot is
    `lengths` (a tensor), attention reads all max_len slots with the `valid` mask. So
    `torch.compile` traces the model's own forward once per (B, max_len). Rows must stay
    aligned (generate-style); the caller sizes max_len (no overflow check: it would sync).

Slot-based decoding (continuous batching, infer/engine.py; dynamic mode):
  cache = KVCache.for_model(model, batch_size=num_slots, max_len=...)
  cache.reset(rows=[s])                                        # admit a request into slot s
  model(prompt_ids[None], kv_cache=cache, cache_rows=torch.tensor([s]))
  model(next_ids[:, None], kv_cache=cache, cache_rows=active_rows)   # one decode step
  cache.reset(rows=[s])                                        # the request finished
Positions are derived per row from the number of valid slots (so left padding does
not shift them); pass `position_ids` to override. Rows may be in any order, but each
row may appear only once per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CachePlan:
    """What one forward needs from the cache: its mask and positions, and where to write."""

    cache: "KVCache"
    mask: torch.Tensor | None  # bool [b, 1, T, Tk] or None (attend to every slot up to each query)
    is_causal: bool  # True when the mask is None and this is a fresh causal prefill
    position_ids: torch.Tensor  # [b, T]
    write: tuple  # the reserved slots, in the form the cache's mode uses

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [b, n_kv, T, D] into this forward's slots -> all slots to attend over [b, n_kv, Tk, D]."""
        return self.cache.update(layer, k, v, self.write)


class KVCache(nn.Module):
    def __init__(self, num_layers: int, batch_size: int, max_len: int, num_kv_heads: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, static: bool = False):
        super().__init__()
        shape = (num_layers, batch_size, num_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lengths", torch.zeros(batch_size, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("valid", torch.zeros(batch_size, max_len, dtype=torch.bool, device=device), persistent=False)
        self.max_len, self.batch_size, self.static = max_len, batch_size, static
        # per-layer views, made once: indexing k[layer] on every update is a dispatched op
        self._k = [self.k[i] for i in range(num_layers)]
        self._v = [self.v[i] for i in range(num_layers)]
        # dynamic mode: host-side mirror of the aligned state, so the fast path needs no device sync
        self._aligned_len: int | None = 0  # common length of all rows, None when rows differ
        self._holes = False  # some written slot is invalid (left padding)

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int, *, static: bool = False, dtype=None,
                  device=None) -> "KVCache":
        cfg = model.config.text
        p = model.lm_head.weight
        return cls(cfg.num_hidden_layers, batch_size, max_len, cfg.num_key_value_heads, cfg.head_dim,
                   dtype=dtype or p.dtype, device=device or p.device, static=static)

    def reset(self, rows=None) -> None:
        """Empty the whole cache, or only the given rows (slots)."""
        if rows is None:
            self.lengths.zero_()
            self.valid.zero_()
            self._aligned_len, self._holes = 0, False
            return
        if self.static:
            raise ValueError("a static KV cache keeps its rows aligned: reset() it whole")
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)
        self.lengths[rows] = 0
        self.valid[rows] = False
        self._aligned_len = None if self.batch_size > len(rows) else 0

    # ------------------------------------------------------------ one forward

    def prepare(self, new_valid: torch.Tensor | None, T: int, rows: torch.Tensor | None = None) -> CachePlan:
        """Reserve T slots per row for the coming forward. new_valid [b, T] (1 = real
        token) or None (all real). Returns the mask, positions and write slots."""
        if self.static:
            if rows is not None:
                raise ValueError("a static KV cache has no slot rows (cache_rows): use a dynamic one")
            return self._prepare_static(new_valid, T)
        dev = self.lengths.device
        if rows is None and self._aligned_len is not None:
            return self._prepare_aligned(new_valid, T)
        rows = torch.arange(self.batch_size, device=dev) if rows is None else rows.to(dev)
        b = rows.shape[0]
        start = self.lengths[rows]  # [b]
        if int((start + T).max()) > self.max_len:
            raise ValueError(f"KV cache overflow: a row needs {int((start + T).max())} slots, max_len={self.max_len}")
        pos = start[:, None] + torch.arange(T, device=dev)  # [b, T] slot of each new token
        nv = torch.ones(b, T, dtype=torch.bool, device=dev) if new_valid is None else new_valid.to(dev).bool()
        self.valid[rows[:, None], pos] = nv
        self.lengths[rows] = start + T
        kv_len = int(self.lengths[rows].max())
        self._aligned_len = None
        mask, positions = _mask_and_positions(self.valid[rows, :kv_len], pos, nv)
        return CachePlan(self, mask, False, positions, ("rows", rows, pos, kv_len))

    def _prepare_aligned(self, new_valid, T):
        start = self._aligned_len
        if start + T > self.max_len:
            raise ValueError(f"KV cache overflow: {start + T} slots needed, max_len={self.max_len}")
        dev = self.lengths.device
        if new_valid is not None:
            self.valid[:, start:start + T] = new_valid.bool()
            # a mask of all ones adds no holes; checking costs one sync, only at prefill
            self._holes = self._holes or bool((~new_valid.bool()).any())
        else:
            self.valid[:, start:start + T] = True
        self.lengths.fill_(start + T)
        self._aligned_len = start + T
        pos = torch.arange(start, start + T, device=dev).expand(self.batch_size, T)
        write = ("aligned", start, T)
        if not self._holes:
            # no padding anywhere: positions are slot indices, masking is plain causal
            return CachePlan(self, None, start == 0, pos, write)
        mask, positions = _mask_and_positions(self.valid[:, : start + T], pos, self.valid[:, start:start + T])
        return CachePlan(self, mask, False, positions, write)

    def _prepare_static(self, new_valid, T):
        # tensors only: the next slot is lengths[0] (rows are aligned), nothing is read on the host
        B = self.batch_size
        slots = self.lengths[:1] + torch.arange(T, device=self.lengths.device)  # [T]
        nv = torch.ones(B, T, dtype=torch.bool, device=self.valid.device) if new_valid is None else new_valid.bool()
        self.valid.index_copy_(1, slots, nv)
        self.lengths.add_(T)
        mask, positions = _mask_and_positions(self.valid, slots.expand(B, T), nv)
        return CachePlan(self, mask, False, positions, ("static", slots))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, write: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new k, v [b, n_kv, T, D] into the slots `write` (from prepare) names;
        return the slots to attend over [b, n_kv, Tk, D]."""
        if write[0] == "static":
            kl, vl = self.k[layer], self.v[layer]  # [B, n_kv, max_len, D]; a select inside the graph
            kl.index_copy_(2, write[1], k)
            vl.index_copy_(2, write[1], v)
            return kl, vl
        kl, vl = self._k[layer], self._v[layer]
        if write[0] == "aligned":
            _, start, T = write
            end = start + T
            kl[:, :, start:end] = k
            vl[:, :, start:end] = v
            return kl[:, :, :end], vl[:, :, :end]
        _, rows, pos, kv_len = write
        # advanced indices on dims 0 and 2 -> the indexed view is [b, T, n_kv, D]
        kl[rows[:, None], :, pos] = k.transpose(1, 2)
        vl[rows[:, None], :, pos] = v.transpose(1, 2)
        return kl[rows, :, :kv_len], vl[rows, :, :kv_len]


def _mask_and_positions(valid_k: torch.Tensor, slot_q: torch.Tensor, nv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """valid_k [b, Tk]; slot_q [b, T] the slot of each query; nv [b, T] whether it is real.
    A query sees valid keys at slots <= its own, and always itself (so padding rows never
    get an all -inf row). Position = number of valid tokens before it (left padding does
    not count). -> (mask [b, 1, T, Tk], positions [b, T])."""
    Tk = valid_k.shape[1]
    kslot = torch.arange(Tk, device=valid_k.device)
    causal = kslot[None, None, :] <= slot_q[:, :, None]  # [b, T, Tk]
    mask = (causal & valid_k[:, None, :]) | (kslot[None, None, :] == slot_q[:, :, None])
    before = valid_k.long().cumsum(-1)  # [b, Tk]
    pos = (before.gather(1, slot_q) - nv.long()).clamp_min(0)
    return mask[:, None], pos
