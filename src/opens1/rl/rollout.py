"""Rollout engines: the small interface between the RL trainer and whatever generates.

    engine.generate(prompts, n, sampling, seed) -> list (per prompt) of list (n) of Rollout
    engine.update_weights(state_dict)            trainer -> rollout weight sync

Two implementations:
    LocalEngine  OpenS1's own batched KV-cache generation (`model.generate`), on CPU or GPU.
                 Colocated: it holds its own copy of the policy, so weight sync is real (and
                 tested) even on one machine; pass `share=True` to generate with the trainer's
                 module directly and skip the copy.
    VLLMEngine   vLLM, when installed (`pip install opens1[vllm]`), for GPU clusters. The
                 trainer pushes weights with vLLM's `load_weights` path after each step.

A prompt is the processor's output for one chat: a dict with `input_ids` LongTensor[1, T] and,
for multimodal prompts, `pixel_values`, `time_series`, `sampling_rates`. Text-only prompts are
batched together (left padding); multimodal prompts run one at a time with their n samples
batched, since their image tiles differ.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    eos_token_id: int | list[int] | None = None
    vocab_limit: int | None = None  # len(tokenizer): padded embedding rows are never sampled


@dataclass
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including the eos token, if one was produced
    finished: bool  # ended with eos (not cut by max_new_tokens)
    extra: dict = field(default_factory=dict)  # multimodal inputs of the prompt, for scoring logprobs


def response_text(tokenizer, rollout: Rollout) -> str:
    """The response as text for a verifier: without the final eos, but with <think> tags kept
    (verifiers grade only what follows </think>, so they must see it)."""
    ids = rollout.response_ids[:-1] if rollout.finished else rollout.response_ids
    return tokenizer.decode(ids, skip_special_tokens=False)


class RolloutEngine(ABC):
    version: int = 0  # bumped by every update_weights: lets the trainer check rollouts are on-policy

    @abstractmethod
    def generate(self, prompts: list[dict], n: int, sampling: SamplingParams, seed: int | None = None) -> list[list[Rollout]]:
        ...

    @abstractmethod
    def update_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        ...


def _eos_set(eos) -> set[int]:
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def _cut_at_eos(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1], True
    return ids, False


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


class LocalEngine(RolloutEngine):
    """Batched generation with OpenS1's own KV cache."""

    def __init__(self, model: torch.nn.Module, pad_token_id: int = 0, share: bool = False, max_batch: int = 64):
        self.model = model if share else copy.deepcopy(model)
        self.model.eval()
        self.pad_token_id = pad_token_id
        self.max_batch = max_batch
        self.version = 0

    @torch.no_grad()
    def update_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        if any(p is q for p, q in zip(self.model.state_dict().values(), state_dict.values())):
            self.version += 1  # shared module: nothing to copy
            return
        self.model.load_state_dict(state_dict, strict=True)
        self.version += 1

    @torch.no_grad()
    def generate(self, prompts, n, sampling, seed=None):
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = _eos_set(sampling.eos_token_id)
        out: list[list[Rollout]] = [[] for _ in prompts]
        text_idx = [i for i, p in enumerate(prompts) if not _is_multimodal(p)]
        # text-only prompts: all their n samples in batches of at most max_batch rows
        rows = [(i, prompts[i]["input_ids"][0].tolist()) for i in text_idx for _ in range(n)]
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start:start + self.max_batch]
            ids, mask = _left_pad([r[1] for r in chunk], self.pad_token_id)
            seqs = self._sample(ids, mask, sampling, gen, {})
            for (i, prompt), seq in zip(chunk, seqs):
                resp, fin = _cut_at_eos(seq[ids.shape[1]:].tolist(), eos)
                out[i].append(Rollout(prompt, resp, fin))
        # multimodal prompts: one prompt at a time, its n samples batched
        for i, p in enumerate(prompts):
            if i in text_idx:
                continue
            extra = {k: v for k, v in p.items() if k not in ("input_ids", "attention_mask", "labels") and v is not None}
            ids = p["input_ids"].repeat(n, 1)
            mm = _repeat_multimodal(extra, n)
            seqs = self._sample(ids, torch.ones_like(ids), sampling, gen, mm)
            for seq in seqs:
                resp, fin = _cut_at_eos(seq[ids.shape[1]:].tolist(), eos)
                out[i].append(Rollout(p["input_ids"][0].tolist(), resp, fin, extra))
        return out

    def _sample(self, ids, mask, s: SamplingParams, gen, mm):
        return self.model.generate(
            ids, attention_mask=mask, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
            top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, eos_token_id=s.eos_token_id, generator=gen,
            vocab_limit=s.vocab_limit, **mm,
        )


def _is_multimodal(p: dict) -> bool:
    return p.get("pixel_values") is not None or bool(p.get("time_series"))


def _repeat_multimodal(extra: dict, n: int) -> dict:
    """Repeat one prompt's images and series for its n samples."""
    mm = {}
    if extra.get("pixel_values") is not None:
        mm["pixel_values"] = extra["pixel_values"].repeat(n, 1, 1, 1)
    if extra.get("time_series"):
        mm["time_series"] = list(extra["time_series"]) * n
        mm["sampling_rates"] = list(extra.get("sampling_rates") or []) * n
    return mm


class VLLMEngine(RolloutEngine):
    """vLLM rollouts (optional extra). `model_dir` is an OpenS1/Intern-S1 HF directory, as
    written by `save_pretrained`; vLLM reads the Intern-S1 layout natively."""

    def __init__(self, model_dir: str, **llm_kwargs):
        try:
            import vllm  # noqa: F401
        except ImportError as e:  # pragma: no cover - exercised only where vLLM is installed
            raise ImportError("VLLMEngine needs vLLM: pip install 'opens1[vllm]'") from e
        from vllm import LLM

        self.llm = LLM(model=model_dir, trust_remote_code=False, **llm_kwargs)
        self.version = 0

    def generate(self, prompts, n, sampling, seed=None):  # pragma: no cover - needs vLLM
        from vllm import SamplingParams as VSP

        sp = VSP(n=n, max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                 top_k=sampling.top_k if sampling.top_k > 0 else -1, top_p=sampling.top_p,
                 min_p=sampling.min_p, seed=seed)
        reqs = [{"prompt_token_ids": p["input_ids"][0].tolist()} for p in prompts]
        results = self.llm.generate(reqs, sp, use_tqdm=False)
        eos = _eos_set(sampling.eos_token_id)
        return [[Rollout(r.prompt_token_ids, list(c.token_ids), bool(eos & set(c.token_ids[-1:])))
                 for c in r.outputs] for r in results]

    def update_weights(self, state_dict):  # pragma: no cover - needs vLLM
        # vLLM maps HF checkpoint names itself; OpenS1's state-dict adapter gives those names.
        from opens1.models.checkpoint import to_hf_state_dict

        items = list(to_hf_state_dict(state_dict).items())
        self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(items))
        self.version += 1
