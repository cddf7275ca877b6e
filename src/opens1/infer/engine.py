"""Continuous batching for serving: many requests share one model, one KV cache
and one batched forward per decode step.

    submit(prompt) --> waiting (bounded deque) --> admit: prefill into a free slot
                                                       |
              events <-- sample <-- one batched decode step over every running slot
                                    (new requests join between steps; finished or
                                     cancelled ones leave and free their slot at once)

Design choices:
- One background thread owns the model and the cache; the API layer only talks to
  it through `submit`/`cancel` and per-request event callbacks. So no lock is held
  during a forward, and torch never runs concurrently on the same tensors.
- The KV cache is a fixed pool of `max_batch_size` slots of `max_seq_len` positions,
  allocated once (no fragmentation, no allocation on the hot path). A request holds
  one slot from prefill to its last token. Requests admitted together are prefilled
  together when text-only (left padded, up to `prefill_tokens` padded tokens per
  forward), alone when they carry images or series; decode runs all running slots
  as one [B, 1] batch with per-row positions.
- Admission control: the waiting queue is bounded (`QueueFull` -> HTTP 429), and
  every accepted request, running or waiting, reserves prompt + max_new_tokens positions
  of a token budget (default: twice what the slot pool holds, i.e. one full cache
  running and one waiting). When that budget is promised away the KV cache cannot
  take more work (`CacheFull` -> HTTP 503). A prompt that can never fit is a
  `PromptTooLong` (a ValueError, -> HTTP 400); a seed torch cannot take, a ValueError.
- A failure is charged to the request that caused it: a prefill fails its group only,
  and when sampling or emitting a batch fails, each row is retried alone and only the
  rows that fail alone are finished with an error; the others carry on. Only a failing
  batched decode forward (no single request to blame) fails every running request.
- The KV cache is `opens1.infer.KVCache` used through its slot API (`cache_rows`):
  `SlotRunner` below is the only code that touches the model and the cache.
- Requests carry the one `SamplingParams` (infer/sampling.py); `max_new_tokens`
  bounds the completion. Sampling uses `opens1.infer.sampling.sample` with per-row
  knobs: all unseeded rows in one call (narrowed to their top-k candidates first, see
  `_draw`); a seeded request gets its own generator, so its output does not depend on
  who else is in the batch. Ids past the tokenizer (vocabulary padding, and a request's
  own `vocab_limit`) are masked.
- Per-request logits processing, only for the rows that ask for it, so other rows pay
  nothing: vLLM's repetition / presence / frequency penalties (`sampling.apply_penalties`,
  from the request's prompt and output ids) and a `constraint` (`Constraint` below:
  constrained decoding, a reasoning budget), whose allowed-token mask is computed for its
  row alone. A constraint that fails (a grammar in an error state, no token allowed)
  fails its request only. Logprobs are those of the model's distribution before
  penalties and constraints (vLLM's default).
- `on_finish(req, reason)` is called once per request as it ends (metrics).
- A decode step is `infer.generate.decode_step`, the same step `generate` runs.
- Stop strings are the API layer's business (they need detokenized text); it
  calls `cancel(req, "stop")`, which frees the slot before the next step.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from opens1.infer.generate import decode_step
from opens1.infer.kv_cache import KVCache
from opens1.infer.sampling import SamplingParams, apply_penalties, sample, token_counts

log = logging.getLogger("opens1.engine")


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


class Engine:
    """Continuous-batching generation over a model with a slot KV cache.

    `model` is an `S1ForConditionalGeneration` (or anything with its forward signature
    and `.config`); `eos_token_ids` end a sequence unless a request sets ignore_eos.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        eos_token_ids: tuple[int, ...] = (),
        max_batch_size: int = 16,
        max_seq_len: int | None = None,
        max_queue: int = 256,
        cache_budget_tokens: int | None = None,
        valid_vocab_size: int | None = None,
        prefill_tokens: int = 4096,
        seed: int = 0,
        on_finish: Callable[[GenerationRequest, str], None] | None = None,
    ):
        self.model = model.eval()
        cfg = model.config
        self.max_batch_size = max_batch_size
        self.max_seq_len = int(max_seq_len or cfg.text.max_position_embeddings)
        self.max_queue = max_queue
        # the promise budget: by default what the slot pool holds, plus as much again waiting,
        # so a full batch of full-context requests can queue behind the running one
        self.cache_budget_tokens = cache_budget_tokens or 2 * self.max_batch_size * self.max_seq_len
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        # checkpoints pad the vocabulary (e.g. to a multiple of 64): ids past the tokenizer
        # are never sampled, since nothing could decode them
        self.valid_vocab_size = valid_vocab_size
        self.prefill_tokens = prefill_tokens  # padded tokens per batched prefill forward
        self.runner = SlotRunner(model, max_batch_size, self.max_seq_len)
        self.stats = EngineStats()
        self.on_finish = on_finish
        self._generator = torch.Generator(device=self.runner.device).manual_seed(seed)
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._running: dict[int, GenerationRequest] = {}  # slot -> request
        self._free_slots = list(range(max_batch_size - 1, -1, -1))
        self._reserved = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False

    # ------------------------------------------------------------ client side (any thread)

    def start(self) -> "Engine":
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="opens1-engine", daemon=True)
            self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, req: GenerationRequest) -> GenerationRequest:
        """Queue a request. Raises PromptTooLong (can never fit), ValueError (a seed outside
        [-2^63, 2^64)), QueueFull or CacheFull."""
        if not req.prompt_ids:
            raise PromptTooLong("the prompt is empty")
        if len(req.prompt_ids) >= self.max_seq_len:
            raise PromptTooLong(
                f"the prompt has {len(req.prompt_ids)} tokens; this model's context is {self.max_seq_len} "
                "tokens, including the completion"
            )
        if req.reservation > self.max_seq_len:
            raise PromptTooLong(
                f"prompt ({len(req.prompt_ids)} tokens) + max_new_tokens ({req.params.max_new_tokens}) exceeds "
                f"the context length ({self.max_seq_len})"
            )
        if req.params.seed is not None:
            try:
                req.generator = torch.Generator(device=self.runner.device).manual_seed(req.params.seed)
            except (ValueError, RuntimeError, OverflowError):
                raise ValueError(f"seed {req.params.seed} is outside [-2^63, 2^64)") from None
        with self._cond:
            if self._stop:
                raise EngineStopped("the engine is shut down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting); retry later")
            if self._reserved + req.reservation > self.cache_budget_tokens:
                raise CacheFull(
                    f"the KV cache cannot take this request now ({self._reserved} of "
                    f"{self.cache_budget_tokens} tokens promised, {req.reservation} asked); retry later"
                )
            self._reserved += req.reservation
            self._waiting.append(req)
            self._cond.notify_all()
        return req

    def cancel(self, req: GenerationRequest, reason: str = "cancelled") -> None:
        """Stop a request; its slot is freed before the next decode step."""
        with self._cond:
            if not req.done and req.cancelled is None:
                req.cancelled = reason
                self._cond.notify_all()

    def load(self) -> dict[str, int]:
        with self._cond:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "free_slots": len(self._free_slots),
                "reserved_tokens": self._reserved,
            }

    def generate(self, prompt_ids: list[int], params: SamplingParams, timeout: float = 300.0, **mm) -> list[TokenEvent]:
        """Blocking helper (tests, benchmarks): submit and wait for every event."""
        events: list[TokenEvent] = []
        finished = threading.Event()

        def on_event(ev: TokenEvent):
            events.append(ev)
            if ev.finish_reason is not None:
                finished.set()

        req = self.submit(GenerationRequest(list(prompt_ids), params, on_event, **mm))
        if not finished.wait(timeout):
            self.cancel(req)
            raise TimeoutError(f"generation did not finish in {timeout} s")
        return events

    # ------------------------------------------------------------ scheduler thread

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stop and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._stop:
                        break
                try:
                    self._step()
                except Exception as e:  # a bug must not kill the server: fail the running requests
                    log.exception("engine step failed")
                    for req in list(self._running.values()):
                        self._finish(req, "error", error=f"{type(e).__name__}: {e}")
        # shutting down: end everything still queued or running
        for req in list(self._running.values()) + list(self._waiting):
            self._finish(req, "cancelled")

    def _step(self) -> None:
        self._reap_cancelled()
        self._admit()
        if self._running:
            self._decode()

    def _reap_cancelled(self) -> None:
        with self._cond:
            gone = [r for r in self._waiting if r.cancelled]
            for r in gone:
                self._waiting.remove(r)
        for r in gone + [r for r in self._running.values() if r.cancelled]:
            self._finish(r, r.cancelled)

    def _admit(self) -> None:
        """Move waiting requests into free slots and prefill them. Text-only prompts are
        prefilled together, left padded, in groups (`_prefill_groups`); a request with
        images or series is prefilled alone."""
        with self._cond:
            admitted = []
            while self._waiting and self._free_slots:
                req = self._waiting.popleft()
                req.slot = self._free_slots.pop()
                self._running[req.slot] = req
                admitted.append(req)
        for group in self._prefill_groups(admitted):
            try:
                if len(group) == 1:
                    req = group[0]
                    logits = self.runner.prefill(
                        req.slot, torch.tensor([req.prompt_ids], device=self.runner.device),
                        pixel_values=req.pixel_values, time_series=req.time_series, sampling_rates=req.sampling_rates,
                    )  # [1, V]
                else:
                    logits = self.runner.prefill_batch([r.slot for r in group], [r.prompt_ids for r in group])  # [b, V]
            except Exception as e:  # bad multimodal input etc.: only this group fails
                log.warning("prefill failed for requests %s: %s", [r.id for r in group], e)
                for req in group:
                    self._finish(req, "error", error=f"{type(e).__name__}: {e}")
                continue
            self.stats.prefills += len(group)
            self.stats.prefill_forwards += 1
            self.stats.prompt_tokens += sum(len(r.prompt_ids) for r in group)
            self._emit(group, logits)

    def _prefill_groups(self, reqs: list[GenerationRequest]) -> list[list[GenerationRequest]]:
        """Greedy FIFO grouping. A group's rows are padded to its longest prompt, so it is
        closed when padding would cost more than `prefill_tokens` or would push a row past
        its slot (the padding occupies cache positions too)."""
        groups: list[list[GenerationRequest]] = []
        for req in reqs:
            multimodal = req.pixel_values is not None or req.time_series is not None
            g = groups[-1] if groups else None
            if g and not multimodal and g[0].pixel_values is None and g[0].time_series is None:
                t_max = max(len(r.prompt_ids) for r in g + [req])
                if t_max * (len(g) + 1) <= self.prefill_tokens and all(
                    t_max + r.params.max_new_tokens <= self.max_seq_len for r in g + [req]
                ):
                    g.append(req)
                    continue
            groups.append([req])
        return groups

    def _decode(self) -> None:
        reqs = sorted(self._running.values(), key=lambda r: r.slot)
        self.stats.max_running = max(self.stats.max_running, len(reqs))
        dev = self.runner.device
        slots = torch.tensor([r.slot for r in reqs], device=dev)
        tokens = torch.tensor([r.output_ids[-1] for r in reqs], device=dev)
        positions = torch.tensor([r.position for r in reqs], device=dev)
        logits = self.runner.decode(slots, tokens, positions)  # [B, V]
        self.stats.steps += 1
        self._emit(reqs, logits)

    def _emit(self, reqs: list[GenerationRequest], logits: torch.Tensor) -> None:
        """Sample one token per row of `logits` [B, V], send events, retire finished rows.
        If the batch fails, each row is retried alone: only a row that fails alone fails."""
        try:
            masked = self._mask_vocab(reqs, logits.float())
            processed = self._process(reqs, masked)
            next_ids = self._sample(reqs, processed)  # [B]
            chosen, tops = self._logprobs(reqs, masked, next_ids)
            next_list = next_ids.tolist()  # one device sync for the batch
        except Exception as e:
            if len(reqs) == 1:
                log.warning("sampling failed for request %d: %s", reqs[0].id, e)
                self._finish(reqs[0], "error", error=f"{type(e).__name__}: {e}")
                return
            for i, req in enumerate(reqs):
                self._emit([req], logits[i : i + 1])
            return
        now = time.perf_counter()
        for i, (req, tok) in enumerate(zip(reqs, next_list)):
            try:
                self._emit_one(req, tok, chosen[i] if chosen is not None else None,
                               (tops[0][i], tops[1][i]) if tops is not None else None, now)
            except Exception as e:
                log.warning("emitting a token failed for request %d: %s", req.id, e)
                self._finish(req, "error", error=f"{type(e).__name__}: {e}")

    def _emit_one(self, req: GenerationRequest, tok: int, chosen: float | None, tops, now: float) -> None:
        """Record one sampled token and send its event. tops: (values, ids) of the top logprobs."""
        if req.constraint is not None:
            req.constraint.accept(tok)
        req.output_ids.append(tok)
        if req.output_counts is not None and 0 <= tok < req.output_counts.shape[0]:
            req.output_counts[tok] += 1
        if req.first_token_at is None:
            req.first_token_at = now
        self.stats.generated_tokens += 1
        ev = TokenEvent(tok)
        if req.params.logprobs is not None:
            ev.logprob = chosen
            k = req.params.logprobs
            ev.top_logprobs = list(zip(tops[1][:k], tops[0][:k])) if k else None
        is_eos = tok in self.eos_token_ids and not req.params.ignore_eos
        if is_eos or tok in req.params.stop_token_ids:
            ev.finish_reason = "stop"
        elif len(req.output_ids) >= req.params.max_new_tokens or req.position + 1 >= self.max_seq_len:
            ev.finish_reason = "length"
        if ev.finish_reason is not None:
            self._release(req)  # before the event: a client that sees the end finds the slot free
        self._send(req, ev)
        if ev.finish_reason is not None:
            self._finished(req, ev.finish_reason)

    def _mask_vocab(self, reqs: list[GenerationRequest], logits: torch.Tensor) -> torch.Tensor:
        """-inf past the tokenizer (engine-wide) and past each request's vocab_limit."""
        V = logits.shape[-1]
        limits = [min(self.valid_vocab_size or V, r.params.vocab_limit or V) for r in reqs]
        if min(limits) >= V:
            return logits
        lim = torch.tensor(limits, device=logits.device)
        return logits.masked_fill(torch.arange(V, device=logits.device)[None, :] >= lim[:, None], float("-inf"))

    def _process(self, reqs: list[GenerationRequest], logits: torch.Tensor) -> torch.Tensor:
        """Penalties and constraints, on the rows that have them (the others are untouched)."""
        pen = [i for i, r in enumerate(reqs) if r.params.penalized]
        con = [i for i, r in enumerate(reqs) if r.constraint is not None]
        if not pen and not con:
            return logits
        logits = logits.clone()
        V = logits.shape[-1]
        if pen:
            idx = torch.tensor(pen, device=logits.device)
            rows = [reqs[i] for i in pen]
            for r in rows:
                if r.prompt_seen is None:  # once per request; the counts then grow token by token
                    r.prompt_seen = token_counts([r.prompt_ids], V, logits.device)[0] > 0
                    r.output_counts = token_counts([r.output_ids], V, logits.device)[0]
            seen = torch.stack([r.prompt_seen for r in rows])  # [b, V]
            counts = torch.stack([r.output_counts for r in rows])  # [b, V]
            knob = lambda name: torch.tensor([getattr(r.params, name) for r in rows], device=logits.device)
            logits[idx] = apply_penalties(logits[idx], seen, counts, repetition=knob("repetition_penalty"),
                                          presence=knob("presence_penalty"), frequency=knob("frequency_penalty"))
        for i in con:
            allowed = reqs[i].constraint.mask(V)  # [k <= V] bool, or None
            if allowed is None:
                continue
            k = allowed.shape[0]
            logits[i, :k].masked_fill_(~allowed.to(logits.device, non_blocking=True), float("-inf"))
            logits[i, k:] = float("-inf")
            if bool(logits[i].max() == float("-inf")):  # nothing allowed, or only ids the vocabulary mask removed
                raise RuntimeError("the constraint allows no token the tokenizer has")
        return logits

    @staticmethod
    def _logprobs(reqs, logits, next_ids):
        """Raw-distribution logprobs of the chosen tokens [B] and the top k (values, ids),
        computed for the whole batch at once; (None, None) when no row asked for them."""
        if all(r.params.logprobs is None for r in reqs):
            return None, None
        lp = torch.log_softmax(logits, dim=-1)  # [B, V]
        chosen = lp.gather(1, next_ids[:, None]).squeeze(1).tolist()
        k = max(r.params.logprobs or 0 for r in reqs)
        if k == 0:
            return chosen, None
        top = torch.topk(lp, k, dim=-1)  # [B, k], sorted
        return chosen, (top.values.tolist(), top.indices.tolist())

    def _sample(self, reqs: list[GenerationRequest], logits: torch.Tensor) -> torch.Tensor:
        """One token per row. Unseeded rows are drawn together, with per-row knobs as
        tensors [B]; a seeded row is drawn alone from its own generator, so what it
        gets does not depend on which other requests share the batch."""
        out = torch.empty(len(reqs), dtype=torch.long, device=logits.device)
        shared = [i for i, r in enumerate(reqs) if r.generator is None]
        # top-k rows and unrestricted rows go separately: only the former can be narrowed
        for rows in ([i for i in shared if reqs[i].params.top_k > 0], [i for i in shared if reqs[i].params.top_k <= 0]):
            if rows:
                idx = torch.tensor(rows, device=logits.device)
                out[idx] = _draw(logits[idx], [reqs[i].params for i in rows], self._generator)
        for i, r in enumerate(reqs):
            if r.generator is not None:
                out[i] = _draw(logits[i : i + 1], [r.params], r.generator)[0]
        return out

    def _send(self, req: GenerationRequest, ev: TokenEvent) -> None:
        try:
            req.on_event(ev)
        except Exception:  # a broken consumer must not take the engine down
            log.exception("event callback failed for request %d", req.id)
            req.cancelled = req.cancelled or "cancelled"

    def _release(self, req: GenerationRequest) -> None:
        with self._cond:
            req.done = True
            if req.slot >= 0 and self._running.get(req.slot) is req:
                del self._running[req.slot]
                self.runner.release(req.slot)
                self._free_slots.append(req.slot)
            self._reserved -= req.reservation
            self._cond.notify_all()

    def _finish(self, req: GenerationRequest, reason: str, error: str | None = None) -> None:
        if req.done:
            return
        self._release(req)
        self._send(req, TokenEvent(None, finish_reason=reason, error=error))
        self._finished(req, reason)

    def _finished(self, req: GenerationRequest, reason: str) -> None:
        if self.on_finish is not None:
            try:
                self.on_finish(req, reason)
            except Exception:  # metrics must not take the engine down
                log.exception("on_finish failed for request %d", req.id)


def _draw(logits: torch.Tensor, params: list[SamplingParams], generator: torch.Generator) -> torch.Tensor:
    """Sample rows of logits [B, V] with per-row knobs -> token ids [B].

    When every row has a top-k, only the top max(k) candidates are handed to `sample`:
    top-k comes first in its filter order, and temperature does not change the ranking,
    so the distribution is exactly the same, but sorting ~50 candidates instead of the
    whole vocabulary makes sampling cheap next to the forward (it dominated a batched
    decode step on CPU)."""
    dev = logits.device
    V = logits.shape[-1]
    top_k = [min(p.top_k, V) for p in params]  # past the vocabulary: every token (and no int64 overflow)
    knob = lambda name, dt: torch.tensor([getattr(p, name) for p in params], dtype=dt, device=dev)
    kw = dict(temperature=knob("temperature", torch.float32), top_k=torch.tensor(top_k, dtype=torch.long, device=dev),
              top_p=knob("top_p", torch.float32), min_p=knob("min_p", torch.float32), generator=generator)
    k_max = max(top_k)
    if min(top_k) > 0 and k_max < V:
        vals, cand = logits.topk(k_max, dim=-1)  # [B, k_max], sorted
        return cand.gather(1, sample(vals, **kw)[:, None]).squeeze(1)
    return sample(logits, **kw)


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
