"""What the serving engine (infer/engine.py) takes and gives: a `GenerationRequest` (prompt
ids, the one `SamplingParams`, an event callback, optional multimodal inputs and a
`Constraint`), the `TokenEvent`s it streams back, its statistics, and the errors the API
layer maps to HTTP statuses."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from opens1.infer.sampling import SamplingParams


class QueueFull(RuntimeError):
    """The waiting queue is full: retry later (HTTP 429)."""


class CacheFull(RuntimeError):
    """The KV cache cannot take this request now (HTTP 503)."""


class EngineStopped(RuntimeError):
    """The engine is not running."""


class PromptTooLong(ValueError):
    """The prompt (plus max_new_tokens) can never fit the context (HTTP 400)."""


@dataclass
class TokenEvent:
    """One generated token, and/or the end of a request (finish_reason set)."""

    token_id: int | None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None


class Constraint:
    """What a request may generate next, as the engine asks it: `mask(V)` before each of the
    request's tokens -> a bool tensor [k] of allowed ids, k <= V (ids >= k are not allowed;
    None: anything), and `accept(id)` after each. Runs in the engine thread: `mask` must be quick (a grammar's mask takes
    tens of microseconds); building a grammar belongs before `submit`."""

    def mask(self, vocab_size: int) -> torch.Tensor | None:
        raise NotImplementedError

    def accept(self, token_id: int) -> None:
        raise NotImplementedError


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[TokenEvent], None]
    # multimodal inputs, passed to the model's prefill forward as is
    pixel_values: torch.Tensor | None = None
    time_series: Any = None
    sampling_rates: Any = None
    constraint: Constraint | None = None
    id: int = field(default_factory=lambda: next(_ids))
    # engine-side state
    slot: int = -1
    output_ids: list[int] = field(default_factory=list)
    cancelled: str | None = None  # a finish reason once cancelled
    done: bool = False
    generator: torch.Generator | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    # penalties: the prompt's ids and the output's counts, [V] each, made on first use
    prompt_seen: torch.Tensor | None = None
    output_counts: torch.Tensor | None = None

    @property
    def reservation(self) -> int:
        return len(self.prompt_ids) + self.params.max_new_tokens

    @property
    def position(self) -> int:
        # index of the next position to write: the last sampled token is not in the cache yet
        return len(self.prompt_ids) + len(self.output_ids) - 1


_ids = itertools.count()


@dataclass
class EngineStats:
    steps: int = 0
    prefills: int = 0  # requests prefilled
    prefill_forwards: int = 0  # forwards that did it (several text prompts share one)
    generated_tokens: int = 0
    prompt_tokens: int = 0  # of the requests prefilled
    max_running: int = 0  # the largest decode batch seen
