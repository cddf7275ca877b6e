"""vLLM's POST /tokenize (a prompt or chat messages -> {tokens, count, max_model_len}) and
POST /detokenize ({tokens} -> {prompt})."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from opens1.serve import prepare
from opens1.serve import protocol as P
from opens1.serve.auth import get_state, require_key
from opens1.serve.bridge import render_in_worker
from opens1.serve.payload import read_request
from opens1.serve.protocol import APIError
from opens1.serve.state import ServerState

router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/tokenize")
async def tokenize(request: Request, state: ServerState = Depends(get_state)):
    req = await read_request(state, request, P.TokenizeRequest)
    return await tokenize_request(state, req)


@router.post("/detokenize")
async def detokenize(request: Request, state: ServerState = Depends(get_state)):
    req = await read_request(state, request, P.DetokenizeRequest)
    n = len(state.tokenizer)
    bad = next((t for t in req.tokens if not 0 <= t < n), None)
    if bad is not None:
        raise APIError(400, f"tokens: token id {bad} is outside the tokenizer's vocabulary (0..{n - 1})", param="tokens")
    text = state.tokenizer.decode(req.tokens, skip_special_tokens=False)
    return P.DetokenizeResponse(prompt=text).model_dump()


async def tokenize_request(state: ServerState, req: P.TokenizeRequest) -> dict:
    """A raw prompt as /v1/completions reads it (added-token strings are their tokens), or
    messages rendered as /v1/chat/completions renders them; both go through the same
    budgets and worker processes as generation requests."""
    if req.prompt is not None:
        checked = prepare.completion_inputs(state, req.prompt)
        (ids, _), = await render_in_worker(state, prepare.completion_prompts, checked, param="prompt")
    else:
        chat = P.ChatCompletionRequest.model_construct(model=req.model, messages=req.messages, tools=req.tools,
                                                       tool_choice=None)
        messages, tools = await run_in_threadpool(prepare.chat_inputs, state, chat)
        thinking = bool((req.chat_template_kwargs or {}).get("enable_thinking", True))
        out = await render_in_worker(state, prepare.render_chat, messages, tools, thinking=thinking,
                                     special_tokens_in_content=state.special_tokens_in_content,
                                     add_generation_prompt=req.add_generation_prompt)
        ids = out["input_ids"]
    strs = [state.tokenizer.id_to_token(i) for i in ids] if req.return_token_strs else None
    return P.TokenizeResponse(count=len(ids), max_model_len=state.max_seq_len, tokens=ids, token_strs=strs).model_dump(
        exclude_none=True)
