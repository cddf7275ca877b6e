"""The model and its KV cache as the serving engine uses them: a fixed pool of cache rows
("slots"), prefilled one or several at a time and decoded together. The only code that
touches the model and the cache for the engine."""

from __future__ import annotations

import torch

from opens1.infer.generate import decode_step
from opens1.infer.kv_cache import KVCache


class SlotRunner:
    """The model plus a `KVCache` of `num_slots` rows: prefill one slot, decode many.

    Uses the cache's slot API (`cache_rows`): each row keeps its own length, so a
    decode batch mixes requests at different positions with no padding."""

    def __init__(self, model: torch.nn.Module, num_slots: int, max_seq_len: int):
        self.model = model
        self.device = next(model.parameters()).device
        self.cache = KVCache.for_model(model, batch_size=num_slots, max_len=max_seq_len)

    def prefill(self, slot: int, input_ids: torch.Tensor, **mm) -> torch.Tensor:
        """input_ids [1, T] into slot `slot` (emptied first) -> next-token logits [1, V]."""
        self.cache.reset(rows=[slot])
        rows = torch.tensor([slot], device=self.device)
        if mm.get("pixel_values") is not None:  # the processor builds them on the CPU
            mm["pixel_values"] = mm["pixel_values"].to(self.device)
        out = self.model(input_ids, kv_cache=self.cache, cache_rows=rows, logits_to_keep=1, **mm)
        return out.logits[:, -1]

    def prefill_batch(self, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Several text prompts into their slots in one forward, left padded so every
        row's last position is real -> next-token logits [b, V]. The cache marks the
        padding invalid and derives positions from real tokens only."""
        T = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), T, dtype=torch.long)
        mask = torch.zeros(len(prompts), T, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, T - len(p) :] = torch.tensor(p)
            mask[i, T - len(p) :] = 1
        self.cache.reset(rows=slots)
        rows = torch.tensor(slots, device=self.device)
        out = self.model(ids.to(self.device), attention_mask=mask.to(self.device), kv_cache=self.cache,
                         cache_rows=rows, logits_to_keep=1)
        return out.logits[:, -1]

    def decode(self, slots: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token per slot: slots, tokens, positions [B] -> logits [B, V]."""
        return decode_step(self.model, self.cache, tokens, rows=slots, positions=positions)

    def release(self, slot: int) -> None:
        self.cache.reset(rows=[slot])
