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
  `SlotRunner` (infer/slots.py) is the only code that touches the model and the cache.
- Requests carry the one `SamplingParams` (infer/sampling.py); `max_new_tokens`
  bounds the completion. Sampling uses `opens1.infer.sampling.sample` with per-row
  knobs: all unseeded rows in one call (narrowed to their top-k candidates first, see
  `infer/logits.py`); a seeded request gets its own generator, so its output does not depend on
  who else is in the batch. Ids past the tokenizer (vocabulary padding, and a request's
  own `vocab_limit`) are masked.
- Per-request logits processing, only for the rows that ask for it, so other rows pay
  nothing: vLLM's repetition / presence / frequency penalties (`sampling.apply_penalties`,
  from the request's prompt and output ids) and a `constraint` (`Constraint` in infer/requests.py:
  constrained decoding, a reasoning budget; infer/logits.py), whose allowed-token mask is computed for its
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
import logging
import threading
import time
from typing import Callable

import torch

from opens1.infer.logits import chosen_logprobs, mask_vocab, penalize_and_constrain, sample_rows
from opens1.infer.requests import (CacheFull, Constraint, EngineStats, EngineStopped, GenerationRequest,
                                   PromptTooLong, QueueFull, TokenEvent)
from opens1.infer.sampling import SamplingParams
from opens1.infer.slots import SlotRunner

__all__ = ["CacheFull", "Constraint", "Engine", "EngineStats", "EngineStopped", "GenerationRequest",
           "PromptTooLong", "QueueFull", "TokenEvent"]

log = logging.getLogger("opens1.engine")


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
            masked = mask_vocab(reqs, logits.float(), self.valid_vocab_size)
            processed = penalize_and_constrain(reqs, masked)
            next_ids = sample_rows(reqs, processed, self._generator)  # [B]
            chosen, tops = chosen_logprobs(reqs, masked, next_ids)
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
