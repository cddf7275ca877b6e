"""POST /v1/completions: raw text or token-id prompts, streamed (SSE) or not. Each prompt
is one `Generation` of n choices; a stream merges their events."""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import aclosing

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from opens1.serve import prepare
from opens1.serve import protocol as P
from opens1.serve.auth import get_state, require_key
from opens1.serve.bridge import (Choice, Generation, failed_event, finish_error, internal_error_event, render_in_worker,
                                 sampling_params, structured_constraints, total_usage)
from opens1.serve.payload import json_response, read_request, sse, warning_headers, warnings_of
from opens1.serve.protocol import APIError
from opens1.serve.state import ServerState

log = logging.getLogger("opens1.serve")
router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/completions")
async def completions(request: Request, state: ServerState = Depends(get_state)):
    req = await read_request(state, request, P.CompletionRequest)
    return await text_completion(state, req, request)


async def text_completion(state: ServerState, req: P.CompletionRequest, request: Request):
    checked = prepare.completion_inputs(state, req.prompt)
    prompts = await render_in_worker(state, prepare.completion_prompts, checked, param="prompt")
    warnings = warnings_of(req)
    gens = await _submit(state, req, prompts)
    rid = f"cmpl-{uuid.uuid4().hex}"
    if req.stream:
        return StreamingResponse(_completion_stream(state, req, gens, prompts=prompts, rid=rid), media_type="text/event-stream",
                                 headers=warning_headers(warnings))
    try:
        for g in gens:
            async for _ in g.events(request):
                pass
    finally:
        for g in gens:
            g.cancel()
    choices = []
    for g, (_, text) in zip(gens, prompts):
        for c in g.choices:
            if c.finish_reason == "error":
                raise finish_error(c)
            body = (text if req.echo else "") + c.out.text
            lp = _legacy_logprobs(c) if req.logprobs is not None else None
            choices.append(P.CompletionChoice(index=c.index, text=body, finish_reason=c.finish_reason, logprobs=lp))
    response = P.CompletionResponse(id=rid, model=state.model_name, choices=choices, usage=total_usage(gens))
    return json_response(response.model_dump(), warnings)


async def _submit(state: ServerState, req: P.CompletionRequest, prompts) -> list[Generation]:
    """One submitted Generation per prompt; none left running if one is refused."""
    gens: list[Generation] = []
    try:
        for k, (ids, _) in enumerate(prompts):
            if req.max_tokens is None:
                max_tokens = min(state.defaults.completion_max_tokens, state.max_seq_len - len(ids))
            else:
                max_tokens = req.max_tokens
            params = sampling_params(state, req, len(ids), max_tokens=max_tokens, logprobs=req.logprobs)
            constraints = await structured_constraints(state, req, params, req.n, thinking_open=False, notes=[])
            gen = Generation(state, ids, params, n=req.n, stop=req.stop, thinking_open=False, split=False, mm={},
                             first_index=k * req.n, constraints=constraints)
            gen.submit()
            gens.append(gen)
    except APIError:
        for g in gens:
            g.cancel()
        raise
    return gens


def _legacy_logprobs(c: Choice, start: int = 0) -> P.CompletionLogprobs:
    out = P.CompletionLogprobs()
    offset = 0
    for lp in c.logprobs[start:]:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({t.token: t.logprob for t in lp.top_logprobs} or None)
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


async def _completion_stream(state: ServerState, req: P.CompletionRequest, gens: list[Generation], *, prompts, rid: str):
    def event(choices: list[P.CompletionChoice], usage: P.Usage | None = None) -> str:
        return sse(P.CompletionResponse(id=rid, model=state.model_name, choices=choices, usage=usage))

    sent_lp: dict[int, int] = {}
    try:
        if req.echo:
            for g, (_, text) in zip(gens, prompts):
                for c in g.choices:
                    yield event([P.CompletionChoice(index=c.index, text=text, finish_reason=None)])
        async with aclosing(_merged(gens)) as events:
            async for c, delta in events:
                if c.finish_reason == "error":
                    yield sse(failed_event(c))
                    continue
                lp = None
                if req.logprobs is not None:
                    lp = _legacy_logprobs(c, sent_lp.get(c.index, 0))
                    sent_lp[c.index] = len(c.logprobs)
                text = delta.content if delta else ""
                if text or c.finish_reason or lp is not None:
                    yield event([P.CompletionChoice(index=c.index, text=text, finish_reason=c.finish_reason, logprobs=lp)])
        if req.stream_options and req.stream_options.include_usage:
            yield event([], usage=total_usage(gens))
        yield "data: [DONE]\n\n"
    except Exception as e:
        log.exception("completion stream failed")
        yield sse(internal_error_event(e))
        yield "data: [DONE]\n\n"
    finally:
        for g in gens:
            g.cancel()


async def _merged(gens: list[Generation]):
    """The events of several generations as they arrive, in one stream."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(g: Generation):
        async for item in g.events():
            await queue.put(item)
        await queue.put(None)

    tasks = [asyncio.create_task(pump(g)) for g in gens]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            yield item
    finally:
        for t in tasks:
            t.cancel()
