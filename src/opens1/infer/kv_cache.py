"""A static, preallocated key/value cache where every batch row is a slot with
its own length.

Layout: `k`, `v` are [num_layers, B, n_kv_heads, max_len, head_dim]; `lengths`
[B] counts the slots each row has written; `valid` [B, max_len] says which
written slots hold real tokens (False for left padding or a freed row). Keys are
stored after RoPE, so a cached key never needs its position again.

One model forward with a cache does, in order:
  1. `plan = cache.prepare(new_valid [b, T], rows)` (the model calls it once):
     reserves slots lengths[r] .. lengths[r]+T-1 for each row r, marks them
     valid/invalid, and returns the attention mask and positions to use.
  2. every layer calls `k_all, v_all = cache.update(layer, k, v)`: writes the new
     keys/values into the reserved slots and returns all slots up to the longest
     row (views when the rows are aligned, so decode allocates nothing).

Fast path (what `generate` uses): all rows share one length, so writes are slice
assignments and a decode step with no padding holes needs no mask at all.

Slot-based decoding (continuous batching, infer/engine.py):
  cache = KVCache.for_model(model, batch_size=num_slots, max_len=...)
  # admit a request into free slot s: clear it, then prefill only that row
  cache.reset(rows=[s])
  model(prompt_ids[None], kv_cache=cache, cache_rows=torch.tensor([s]))
  # one decode step for the active slots (each at its own length)
  model(next_ids[:, None], kv_cache=cache, cache_rows=active_rows)
  # finish request in slot s
  cache.reset(rows=[s])
Positions are derived per row from the number of valid slots (so left padding
does not shift them); pass `position_ids` to override. Rows may be in any order,
but each row may appear only once per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CachePlan:
    mask: torch.Tensor | None  # bool [b, 1, T, Tk] or None (attend to every slot up to each query)
    is_causal: bool  # True when the mask is None and this is a fresh causal prefill
    position_ids: torch.Tensor  # [b, T]


class KVCache(nn.Module):
    def __init__(self, num_layers: int, batch_size: int, max_len: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        shape = (num_layers, batch_size, num_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("lengths", torch.zeros(batch_size, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("valid", torch.zeros(batch_size, max_len, dtype=torch.bool, device=device), persistent=False)
        self.max_len, self.batch_size = max_len, batch_size
        # per-layer views, made once: indexing k[layer] on every update is a dispatched op
        self._k = [self.k[i] for i in range(num_layers)]
        self._v = [self.v[i] for i in range(num_layers)]
        # host-side mirror of the aligned state, so the fast path needs no device sync
        self._aligned_len: int | None = 0  # common length of all rows, None when rows differ
        self._holes = False  # some written slot is invalid (left padding)
        self._write: tuple | None = None  # set by prepare(), used by update()

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int, dtype=None, device=None) -> "KVCache":
        cfg = model.config.text
        p = model.lm_head.weight
        return cls(cfg.num_hidden_layers, batch_size, max_len, cfg.num_key_value_heads, cfg.head_dim,
                   dtype=dtype or p.dtype, device=device or p.device)

    def reset(self, rows=None) -> None:
        """Empty the whole cache, or only the given rows (slots)."""
        if rows is None:
            self.lengths.zero_()
            self.valid.zero_()
            self._aligned_len, self._holes = 0, False
            return
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)
        self.lengths[rows] = 0
        self.valid[rows] = False
        self._aligned_len = None if self.batch_size > len(rows) else 0

    # ------------------------------------------------------------ one forward

    def prepare(self, new_valid: torch.Tensor | None, T: int, rows: torch.Tensor | None = None) -> CachePlan:
        """Reserve T slots per row for the coming forward. new_valid [b, T] (1 = real
        token) or None (all real). Returns the mask and positions for the forward."""
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
        self._write = ("rows", rows, pos, kv_len)
        self._aligned_len = None
        return self._plan(self.valid[rows, :kv_len], pos, nv, start)

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
        self._write = ("aligned", start, T)
        if not self._holes:
            # no padding anywhere: positions are slot indices, masking is plain causal
            pos = torch.arange(start, start + T, device=dev).expand(self.batch_size, T)
            return CachePlan(mask=None, is_causal=(start == 0), position_ids=pos)
        pos = torch.arange(start, start + T, device=dev).expand(self.batch_size, T)
        nv = self.valid[:, start:start + T]
        return self._plan(self.valid[:, : start + T], pos, nv, torch.full((self.batch_size,), start, device=dev))

    def reserve_aligned(self, T: int = 1) -> int:
        """Reserve the next T slots of every row (rows must be aligned) and mark them valid,
        without planning a mask: for compiled decode steps (infer/static.py), which mask
        with `valid` themselves. Returns the first reserved slot."""
        if self._aligned_len is None:
            raise ValueError("reserve_aligned() needs rows of one length (generate-style decoding)")
        start = self._aligned_len
        if start + T > self.max_len:
            raise ValueError(f"KV cache overflow: {start + T} slots needed, max_len={self.max_len}")
        self.valid[:, start:start + T] = True
        self.lengths.fill_(start + T)
        self._aligned_len, self._write = start + T, None
        return start

    @staticmethod
    def _plan(valid_k, slot_q, nv, start) -> CachePlan:
        # valid_k [b, Tk]; slot_q [b, T] slot of each query. A query sees valid keys at
        # slots <= its own, and always itself (so padding rows never get an all -inf row).
        Tk = valid_k.shape[1]
        kslot = torch.arange(Tk, device=valid_k.device)
        causal = kslot[None, None, :] <= slot_q[:, :, None]  # [b, T, Tk]
        mask = (causal & valid_k[:, None, :]) | (kslot[None, None, :] == slot_q[:, :, None])
        # position = number of valid tokens before this one (left padding does not count)
        before = valid_k.long().cumsum(-1)  # [b, Tk]
        pos = (before.gather(1, slot_q) - nv.long()).clamp_min(0)
        return CachePlan(mask=mask[:, None], is_causal=False, position_ids=pos)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new k, v [b, n_kv, T, D] into the slots prepare() reserved; return all
        slots [b, n_kv, Tk, D]."""
        w = self._write
        if w is None:
            raise RuntimeError("KVCache.update() called before prepare()")
        kl, vl = self._k[layer], self._v[layer]  # [B, n_kv, max_len, D]
        if w[0] == "aligned":
            _, start, T = w
            end = start + T
            kl[:, :, start:end] = k
            vl[:, :, start:end] = v
            return kl[:, :, :end], vl[:, :, :end]
        _, rows, pos, kv_len = w
        # advanced indices on dims 0 and 2 -> the indexed view is [b, T, n_kv, D]
        kl[rows[:, None], :, pos] = k.transpose(1, 2)
        vl[rows[:, None], :, pos] = v.transpose(1, 2)
        return kl[rows, :, :kv_len], vl[rows, :, :kv_len]
