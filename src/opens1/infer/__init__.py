"""Inference: `generate` (infer/generate.py), batched generation for evaluation and RL
(infer/batch.py), the continuous-batching engine (infer/engine.py), the KV cache
(infer/kv_cache.py) and `SamplingParams` / `sample` (infer/sampling.py)."""

from opens1.infer.generate import decode_step, generate
from opens1.infer.kv_cache import KVCache
from opens1.infer.sampling import SamplingParams, sample

__all__ = ["KVCache", "SamplingParams", "decode_step", "generate", "sample"]
