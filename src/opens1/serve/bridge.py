"""The bridge between API requests and the engine: a request's sampling parameters and
constraints, its prompt rendered in a worker, its n choices submitted to the engine
(`Generation`) and their tokens turned back into text, reasoning and tool calls.

The engine runs in its own thread; its per-token callbacks are handed to the asyncio loop
with `call_soon_threadsafe`. A client that goes away cancels its requests, which frees
their KV-cache slots before the next decode step. `response_format` and `thinking_budget`
become the engine request's `Constraint` (serve/structured.py), built in a thread before
submission: the engine thread only asks it for a mask per token of that request."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import torch
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from opens1.infer.engine import CacheFull, EngineStopped, GenerationRequest, PromptTooLong, QueueFull, TokenEvent
from opens1.infer.sampling import SamplingParams
from opens1.serve import prepare
from opens1.serve import protocol as P
from opens1.serve import structured as S
from opens1.serve.protocol import APIError
from opens1.serve.state import ServerState
from opens1.serve.text import IncrementalDecoder, OutputText
from opens1.serve.workers import Busy, WorkerDied, Workers
from opens1.tokenizer.chat import parse_response

# ---------------------------------------------------------------- before the engine


def sampling_params(state: ServerState, req, prompt_len: int, *, max_tokens: int | None,
                    logprobs: int | None) -> SamplingParams:
    """The request's sampling knobs, the server's defaults where it left a field unset, and
    a completion length that fits the context."""
    d = state.defaults
    room = state.max_seq_len - prompt_len
    if room < 1:
        raise APIError(
            400, f"the prompt has {prompt_len} tokens but the context is {state.max_seq_len} tokens",
            param="messages", code="context_length_exceeded",
        )
    if max_tokens is None:
        max_tokens = min(room, d.max_tokens) if d.max_tokens else room
    elif max_tokens > room:
        raise APIError(
            400, f"max_tokens ({max_tokens}) + prompt ({prompt_len} tokens) exceeds the context length "
            f"({state.max_seq_len}); ask for at most {room}", param="max_tokens", code="context_length_exceeded",
        )
    knobs = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
    given = {k: getattr(req, k) for k in knobs if getattr(req, k) is not None}
    if req.top_k is not None:
        # -1 or 0: off (vLLM's convention); so is any k past the vocabulary (all tokens kept)
        given["top_k"] = req.top_k if 0 < req.top_k < state.vocab_size else 0
    return d.sampling.replace(max_new_tokens=max_tokens, seed=req.seed, ignore_eos=req.ignore_eos, logprobs=logprobs,
                              **given)


async def in_worker(pool: Workers, fn, *args, **kwargs):
    """fn(context, *args, **kwargs) in a worker process; the pool's limits as API errors."""
    try:
        return await pool.run(fn, *args, **kwargs)
    except Busy as e:
        raise APIError(429, str(e), type="rate_limit_error", code="server_busy") from None
    except WorkerDied as e:
        raise APIError(500, str(e), type="server_error", code="worker_died") from None


async def render_in_worker(state: ServerState, fn, *args, param: str = "messages", **kwargs):
    """A `prepare` rendering function in a render worker; bad input it finds is a 400."""
    try:
        return await in_worker(state.render, fn, *args, **kwargs)
    except (ValueError, TypeError, KeyError) as e:
        msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise APIError(400, msg if msg.startswith(param) else f"{param}: {msg}", param=param) from None


def multimodal(out: dict) -> dict:
    """The worker's numpy arrays as the tensors the engine hands the model."""
    pv, ts = out["pixel_values"], out["time_series"]
    return {
        "pixel_values": None if pv is None else torch.from_numpy(pv),
        "time_series": None if ts is None else [torch.from_numpy(x) for x in ts],
        "sampling_rates": out["sampling_rates"],
    }


async def structured_constraints(state: ServerState, req, params: SamplingParams, n: int, *, thinking_open: bool,
                                 notes: list[str]) -> list | None:
    """The engine constraints of a request's n choices for its `response_format` and
    `thinking_budget` (None: unconstrained). Grammars are built in a thread: llguidance
    releases the GIL while it builds one, and the event loop carries on."""
    rf = req.response_format
    schema = None if rf is None else S.response_schema(rf)
    budget = getattr(req, "thinking_budget", None)
    if budget is not None and not thinking_open:
        notes.append("thinking_budget has no effect: thinking is off")
        budget = None
    if schema is None and budget is None:
        return None
    if schema is not None:
        budget = _check_schema(state, req, schema, params, budget=budget, thinking_open=thinking_open)
    think_close = prepare._token_id(state.tokenizer, "</think>")

    def build() -> list:
        vocab = matcher = None
        if schema is not None:
            vocab = S.grammar_vocab(state)
            matcher = vocab.matcher(S.json_grammar(schema, after_think=thinking_open))
        matchers = [matcher] + [None if matcher is None else matcher.deep_copy() for _ in range(n - 1)]
        return [S.Structured(vocab, m, thinking=thinking_open, budget=budget, think_close_id=think_close) for m in matchers]

    try:
        return await run_in_threadpool(build)
    except ValueError as e:
        raise APIError(400, f"response_format: {e}", param="response_format", code="invalid_schema") from None


def _check_schema(state: ServerState, req, schema: dict, params: SamplingParams, *, budget: int | None,
                  thinking_open: bool) -> int | None:
    """A JSON response_format's limits; the reasoning budget that leaves the JSON room."""
    if req.ignore_eos:
        raise APIError(400, "ignore_eos cannot be combined with a JSON response_format (the JSON ends the answer)",
                       param="ignore_eos")
    if len(json.dumps(schema)) > state.prompt_char_limit:
        raise APIError(400, f"response_format: the schema is longer than the prompt budget ({state.prompt_char_limit:,} "
                       "characters)", param="response_format", code="context_length_exceeded")
    if not thinking_open:
        return budget
    # the reasoning gets half the tokens by default, so the answer always has room
    if budget is None:
        return max(1, params.max_new_tokens // 2)
    if budget >= params.max_new_tokens:
        raise APIError(400, f"thinking_budget ({budget}) must be less than max_tokens ({params.max_new_tokens}), "
                       "so that the response_format content fits", param="thinking_budget")
    return budget


# ---------------------------------------------------------------- in the engine


@dataclass
class Choice:
    """One sequence of a request, as the API layer tracks it."""

    index: int
    req: GenerationRequest
    out: OutputText
    decoder: IncrementalDecoder
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[P.TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None


class Generation:
    """The n choices of one API request, submitted to the engine and drained here.
    `split`: whether the text is split into reasoning and content (chat) or not."""

    def __init__(self, state: ServerState, prompt_ids: list[int], params: SamplingParams, *, n: int, stop,
                 thinking_open: bool, split: bool, mm: dict, first_index: int = 0, constraints: list | None = None):
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices: list[Choice] = []
        self.prompt_tokens = len(prompt_ids)
        # tokens that end a sequence are not part of its text
        self._hidden_ids = set(state.engine.eos_token_ids) | set(params.stop_token_ids)
        for k in range(n):
            # choice k is seeded seed + k, wrapped into torch's seed range (2^64 values; -1 and
            # 2^64 - 1 seed the same generator)
            p = params.replace(seed=None if params.seed is None else (params.seed + k) % 2**64)
            idx = first_index + k
            constraint = constraints[k] if constraints else None
            req = GenerationRequest(list(prompt_ids), p, self._callback(idx), constraint=constraint, **mm)
            out = OutputText(stop, thinking_open=thinking_open, split=split)
            self.choices.append(Choice(idx, req, out, IncrementalDecoder(state.tokenizer)))
        self._by_index = {c.index: c for c in self.choices}

    def _callback(self, idx: int):
        def on_event(ev: TokenEvent) -> None:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (idx, ev))
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        return on_event

    def submit(self) -> None:
        try:
            for c in self.choices:
                self.state.engine.submit(c.req)
        except (QueueFull, CacheFull, EngineStopped, ValueError) as e:
            self.cancel()
            raise _engine_error(e) from None

    def cancel(self) -> None:
        for c in self.choices:
            self.state.engine.cancel(c.req)

    @property
    def done(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    async def watch_disconnect(self, request: Request) -> None:
        """Cancel the choices as soon as the client goes away (non-streamed requests:
        a streamed response notices on its own when a write fails)."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                self.cancel()
                return

    async def events(self, request: Request | None = None) -> AsyncIterator[tuple[Choice, Any]]:
        """Yields (choice, Delta-or-None) as tokens arrive; sets finish reasons.
        With `request`, a client disconnect cancels the generation at once."""
        watcher = asyncio.create_task(self.watch_disconnect(request)) if request is not None else None
        try:
            async for item in self._events():
                yield item
        finally:
            if watcher is not None:
                watcher.cancel()

    async def drain(self, request: Request) -> None:
        """Run to the end (a non-streamed response), cancelled if the client goes away."""
        try:
            async for _ in self.events(request):
                pass
        finally:
            self.cancel()

    async def _events(self) -> AsyncIterator[tuple[Choice, Any]]:
        while not self.done:
            if not self.queue.empty():  # drain without a timer: most events arrive in bursts
                idx, ev = self.queue.get_nowait()
            else:
                idx, ev = await self.queue.get()
            c = self._by_index[idx]
            if c.finish_reason is not None:
                continue  # a token that raced a stop-string cancel
            yield c, self._apply(c, ev)

    def _apply(self, c: Choice, ev: TokenEvent):
        """One engine event into its choice: the new text (a Delta, or None)."""
        delta = None
        if ev.token_id is not None:
            c.token_ids.append(ev.token_id)
            if ev.logprob is not None:
                c.logprobs.append(self._logprob(ev))
            hidden = ev.finish_reason == "stop" and ev.token_id in self._hidden_ids
            if not hidden:
                delta = c.out.feed(c.decoder.push(ev.token_id))
            if c.out.stopped:
                self.state.engine.cancel(c.req, "stop")
                c.finish_reason = "stop"
        if ev.finish_reason is not None and c.finish_reason is None:
            c.finish_reason = "stop" if ev.finish_reason == "cancelled" else ev.finish_reason
            c.error = ev.error
        if c.finish_reason is not None:
            tail = c.out.finish()
            if delta is None:
                delta = tail
            else:
                delta.reasoning += tail.reasoning
                delta.content += tail.content
        return delta

    def _logprob(self, ev: TokenEvent) -> P.TokenLogprob:
        tok = self.state.tokenizer
        text = tok.decode([ev.token_id], skip_special_tokens=False)
        tops = [P.TopLogprob(token=(t := tok.decode([i], skip_special_tokens=False)), logprob=lp, bytes=list(t.encode()))
                for i, lp in (ev.top_logprobs or [])]
        return P.TokenLogprob(token=text, logprob=ev.logprob, bytes=list(text.encode()), top_logprobs=tops)

    def usage(self) -> P.Usage:
        completion = sum(len(c.token_ids) for c in self.choices)
        return P.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion,
                       total_tokens=self.prompt_tokens + completion)


def _engine_error(e: Exception) -> APIError:
    """What the engine refused at submission, as the client sees it."""
    if isinstance(e, QueueFull):
        return APIError(429, str(e), type="rate_limit_error", code="queue_full")
    if isinstance(e, CacheFull):
        return APIError(503, str(e), type="server_overloaded", code="kv_cache_full")
    if isinstance(e, EngineStopped):
        return APIError(503, str(e), type="server_error", code="engine_stopped")
    if isinstance(e, PromptTooLong):
        return APIError(400, str(e), param="messages", code="context_length_exceeded")
    return APIError(400, str(e), code="invalid_value")


# ---------------------------------------------------------------- after the engine


def total_usage(gens: list[Generation]) -> P.Usage:
    """The usage of several generations (one per prompt of a completion request)."""
    usage = P.Usage()
    for g in gens:
        u = g.usage()
        usage.prompt_tokens += u.prompt_tokens
        usage.completion_tokens += u.completion_tokens
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return usage


def finish_error(c: Choice) -> APIError:
    """A choice that ended in an error, as the error of a non-streamed response."""
    # the model's own checks (e.g. placeholder/feature counts) raise ValueError: the input's fault
    if (c.error or "").startswith("ValueError"):
        return APIError(400, f"the model rejected the input: {c.error}", code="invalid_input")
    return APIError(500, f"generation failed: {c.error}", type="server_error", code="generation_error")


def failed_event(c: Choice) -> P.ErrorResponse:
    """A choice that ended in an error, as an event of a stream."""
    return P.ErrorResponse(error=P.ErrorBody(message=f"generation failed: {c.error}", type="server_error",
                                             code="generation_error"))


def internal_error_event(e: Exception) -> P.ErrorResponse:
    """A stream that failed after its headers were sent: reported in-band."""
    return P.ErrorResponse(error=P.ErrorBody(message=f"internal error: {type(e).__name__}: {e}", type="server_error"))


def parse_final(c: Choice, thinking_open: bool) -> tuple[str | None, str | None, list[P.ToolCall] | None]:
    """(reasoning, content, tool_calls) of a finished choice, through the chat parser.
    Intern-S1 writes `parameters`; OpenAI clients get them as the JSON `arguments` string."""
    parsed = parse_response(c.out.text, prompt_ends_in_think=thinking_open)
    calls = [
        P.ToolCall(function=P.FunctionCall(name=tc.name, arguments=json.dumps(tc.arguments, ensure_ascii=False)))
        for tc in parsed.tool_calls
    ]
    return parsed.reasoning or None, parsed.content, calls or None
