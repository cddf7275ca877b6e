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

from opens1.infer.batch import generate_batch, is_multimodal, multimodal_inputs
from opens1.infer.sampling import SamplingParams
from opens1.models.checkpoint import export_state_dict, load_model


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


class LocalEngine(RolloutEngine):
    """Batched generation with OpenS1's own KV cache."""

    def __init__(self, model: torch.nn.Module, *, pad_token_id: int, share: bool = False, max_batch: int = 64):
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
        outs = generate_batch(self.model, prompts, n, sampling, pad_token_id=self.pad_token_id, generator=gen,
                              max_batch=self.max_batch)
        return [[Rollout(p["input_ids"][0].tolist(), ids, fin, multimodal_inputs(p) if is_multimodal(p) else {})
                 for ids, fin in samples] for p, samples in zip(prompts, outs)]


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
        self.model_dir = model_dir
        self._shadow = None
        self.version = 0

    def generate(self, prompts, n, sampling, seed=None):  # pragma: no cover - needs vLLM
        from vllm import SamplingParams as VSP

        sp = VSP(n=n, max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                 top_k=sampling.top_k if sampling.top_k > 0 else -1, top_p=sampling.top_p,
                 min_p=sampling.min_p, seed=seed, stop_token_ids=list(sampling.stop_token_ids))
        reqs = [{"prompt_token_ids": p["input_ids"][0].tolist()} for p in prompts]
        results = self.llm.generate(reqs, sp, use_tqdm=False)
        eos = set(sampling.stop_token_ids)
        return [[Rollout(r.prompt_token_ids, list(c.token_ids), bool(eos & set(c.token_ids[-1:])))
                 for c in r.outputs] for r in results]

    def update_weights(self, state_dict):  # pragma: no cover - needs vLLM
        # vLLM loads HF checkpoint names; OpenS1's state-dict adapter writes them from a model.
        # The CPU shadow copy costs host memory equal to the model: fine up to a few B parameters.
        if self._shadow is None:
            self._shadow = load_model(self.model_dir, dtype=torch.float32, device="cpu")
        self._shadow.load_state_dict(state_dict)
        items = list(export_state_dict(self._shadow).items())
        self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(items))
        self.version += 1
