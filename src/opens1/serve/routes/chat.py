"""POST /v1/chat/completions: chat, streamed (SSE) or not; reasoning, tools, images, series.

Chat messages go through the one `Processor` (chat template, image tiles, series) and the
answer through the one chat parser (`parse_response`). Images must be inline data URLs: a
remote URL is refused and never fetched (no SSRF, no hangs). Streaming follows OpenAI's
chunk format; reasoning streams in `delta.reasoning_content` (vLLM's field), tool calls
arrive in one delta at the end."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from opens1.serve import prepare
from opens1.serve import protocol as P
from opens1.serve.auth import get_state, require_key
from opens1.serve.bridge import (Generation, failed_event, finish_error, internal_error_event, multimodal, parse_final,
                                 render_in_worker, sampling_params, structured_constraints)
from opens1.serve.payload import json_response, read_request, sse, warning_headers, warnings_of
from opens1.serve.state import ServerState

log = logging.getLogger("opens1.serve")
router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/chat/completions")
async def chat(request: Request, state: ServerState = Depends(get_state)):
    req = await read_request(state, request, P.ChatCompletionRequest)
    return await chat_completion(state, req, request)


async def chat_completion(state: ServerState, req: P.ChatCompletionRequest, request: Request):
    # checks and budgets first (cheap; no pixel decoded, nothing tokenized), then the
    # template, tokenization, image tiles and series in a worker process, so neither a
    # heavy prompt nor the GIL-holding tokenizer can stall other clients
    messages, tools = await run_in_threadpool(prepare.chat_inputs, state, req)
    thinking = bool((req.chat_template_kwargs or {}).get("enable_thinking", True))
    out = await render_in_worker(state, prepare.render_chat, messages, tools, thinking=thinking,
                                 special_tokens_in_content=state.special_tokens_in_content)
    prompt_ids, thinking_open = out["input_ids"], out["thinking_open"]
    n_lp = (req.top_logprobs or 0) if req.logprobs else None
    params = sampling_params(state, req, len(prompt_ids), max_tokens=req.max_completion_tokens or req.max_tokens,
                             logprobs=n_lp)
    notes: list[str] = []
    constraints = await structured_constraints(state, req, params, req.n, thinking_open=thinking_open, notes=notes)
    warnings = warnings_of(req, notes)
    gen = Generation(state, prompt_ids, params, n=req.n, stop=req.stop, thinking_open=thinking_open, split=True,
                     mm=multimodal(out), constraints=constraints)
    gen.submit()
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        stream = _chat_stream(state, gen, rid, thinking_open=thinking_open, include_usage=include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=warning_headers(warnings))
    await gen.drain(request)
    return json_response(_chat_response(state, gen, rid, thinking_open=thinking_open, logprobs=req.logprobs), warnings)


def _chat_response(state: ServerState, gen: Generation, rid: str, *, thinking_open: bool, logprobs: bool) -> dict:
    choices = []
    for c in gen.choices:
        if c.finish_reason == "error":
            # bad multimodal input that only the model could detect, or an engine fault
            raise finish_error(c)
        reasoning, content, calls = parse_final(c, thinking_open)
        finish = "tool_calls" if calls else c.finish_reason
        msg = P.ResponseMessage(content=content, reasoning_content=reasoning, tool_calls=calls)
        lp = P.ChoiceLogprobs(content=c.logprobs) if logprobs else None
        choices.append(P.ChatChoice(index=c.index, message=msg, finish_reason=finish, logprobs=lp))
    return P.ChatCompletionResponse(id=rid, model=state.model_name, choices=choices, usage=gen.usage()).model_dump()


async def _chat_stream(state: ServerState, gen: Generation, rid: str, *, thinking_open: bool, include_usage: bool):
    def chunk(index: int, delta: P.DeltaMessage, finish: str | None = None, lp=None) -> str:
        choice = P.ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=lp)
        return sse(P.ChatCompletionChunk(id=rid, model=state.model_name, choices=[choice]))

    try:
        for c in gen.choices:
            yield chunk(c.index, P.DeltaMessage(role="assistant", content=""))
        sent_lp = {c.index: 0 for c in gen.choices}
        async for c, delta in gen.events():
            lp = None
            if len(c.logprobs) > sent_lp[c.index]:
                lp = P.ChoiceLogprobs(content=c.logprobs[sent_lp[c.index] :])
                sent_lp[c.index] = len(c.logprobs)
            if delta or lp is not None:
                text = P.DeltaMessage(reasoning_content=delta.reasoning or None if delta else None,
                                      content=delta.content or None if delta else None)
                yield chunk(c.index, text, lp=lp)
            if c.finish_reason is None:
                continue
            if c.finish_reason == "error":
                yield sse(failed_event(c))
                continue
            _, _, calls = parse_final(c, thinking_open)
            if calls:
                deltas = [P.DeltaToolCall(index=k, id=tc.id, type="function",
                                          function={"name": tc.function.name, "arguments": tc.function.arguments})
                          for k, tc in enumerate(calls)]
                yield chunk(c.index, P.DeltaMessage(tool_calls=deltas))
            yield chunk(c.index, P.DeltaMessage(), finish="tool_calls" if calls else c.finish_reason)
        if include_usage:
            yield sse(P.ChatCompletionChunk(id=rid, model=state.model_name, choices=[], usage=gen.usage()))
        yield "data: [DONE]\n\n"
    except Exception as e:  # headers are sent: report in-band instead of dropping the connection
        log.exception("chat stream failed")
        yield sse(internal_error_event(e))
        yield "data: [DONE]\n\n"
    finally:
        gen.cancel()  # client gone or stream over: free the slots now
