"""Inference pieces shared by `generate`, the evaluator and the server:
`KVCache` (static, per-row slots), `sample` (batched temperature/top-k/top-p/min-p)."""

from opens1.infer.kv_cache import KVCache
from opens1.infer.sampling import sample

__all__ = ["KVCache", "sample"]
