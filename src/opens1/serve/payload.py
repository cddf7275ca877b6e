"""Request bodies in, JSON and SSE out, with OpenAI-style errors for everything a client
can get wrong.

Bodies are read and validated by hand (JSON content type, size limit, pydantic-core's
strict parser, sizes, pydantic), so that every bad request becomes an OpenAI-style error
`{"error": {message, type, param, code}}` with a 4xx status and a message naming the
problem; the engine never sees it. Only `application/json` bodies are taken: a web page
cannot post a simple cross-origin form to the server. Fields a request sends that the
server does not use are never dropped silently: they are named in a `Warning: 299`
header, a `warnings` list in the JSON body (not streamed) and a log line."""

from __future__ import annotations

import json
import logging
from typing import Any

import pydantic_core
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from opens1.serve import prepare
from opens1.serve.protocol import APIError
from opens1.serve.state import ServerState

log = logging.getLogger("opens1.serve")

_PART_TYPES = {"text", "image_url", "time_series"}
_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none", "function-after"}


async def read_request(state: ServerState, request: Request, model_cls):
    """The validated request of a POST route, for a model this server serves."""
    raw = await read_body(request, state.max_body_bytes)
    req = await run_in_threadpool(parse_body, state, raw, model_cls)
    check_model(state, req.model)
    return req


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body of a JSON request, or a 415/413 naming the problem."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        # a browser sends text/plain, forms and multipart cross-origin without asking first;
        # application/json needs a CORS preflight, which this server never grants
        raise APIError(415, f"the body must be JSON sent as 'Content-Type: application/json' (got {ctype or 'none'!r})",
                       code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body too large ({declared} bytes; limit {limit})", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body too large (over {limit} bytes)", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(state: ServerState, raw: bytes, model_cls):
    """JSON bytes -> a validated request (run in a thread: a large body takes a while).

    pydantic-core's parser refuses what Python's json accepts and later code cannot take:
    NaN and Infinity, lone surrogates (not UTF-8 encodable), nesting past 200 levels.
    Sizes are checked before pydantic builds its objects (`prepare.check_sizes`)."""
    try:
        body = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as e:
        raise APIError(400, f"invalid JSON body: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the JSON body must be an object", code="invalid_json")
    prepare.check_sizes(state, body)
    try:
        req = model_cls.model_validate(body)
    except ValidationError as e:
        raise validation_error(e) from None
    if hasattr(req, "set_ignored"):
        req.set_ignored(body)
    return req


def validation_error(e: ValidationError) -> APIError:
    """A 400 naming the most specific field pydantic refused."""
    # with unions pydantic reports one error per branch; the deepest is the most specific
    err = max(e.errors(), key=lambda x: len(x["loc"]))
    # drop pydantic's union branch names from the location: messages.0.content.1.image_url
    loc: list[str] = []
    prev = None
    for x in err["loc"]:
        branch = isinstance(x, str) and ("[" in x or x in _BRANCHES)
        tag = isinstance(prev, int) and x in _PART_TYPES  # the discriminator after a list index
        if not (branch or tag):
            loc.append(str(x))
        prev = x
    param = ".".join(loc) or None
    return APIError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param, code="invalid_value")


def check_model(state: ServerState, name: str) -> None:
    if name not in state.served_names:
        served = " or ".join(repr(n) for n in state.served_names)
        raise APIError(404, f"the model {name!r} does not exist; this server serves {served}", param="model",
                       code="model_not_found")


def warnings_of(req, extra: list[str] = ()) -> list[str]:
    """What the server did not use from this request, logged once."""
    out = [f"ignored field: {k}" for k in getattr(req, "ignored_fields", [])] + list(extra)
    if out:
        log.warning("request warnings: %s", "; ".join(out))
    return out


def warning_headers(warnings: list[str]) -> dict[str, str]:
    """RFC 7234's `Warning: 299 <agent> "<text>"` (a persistent, miscellaneous warning)."""
    if not warnings:
        return {}
    text = "; ".join(warnings)[:1000]
    # a header is latin-1 text: other characters (a field's name is any JSON string) become '?'
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in text).replace("\\", "\\\\").replace('"', '\\"')
    return {"Warning": f'299 opens1 "{text}"'}


def json_response(body: dict, warnings: list[str]) -> JSONResponse:
    """A response body with the request's warnings in it and in the `Warning` header."""
    if warnings:
        body["warnings"] = warnings
    return JSONResponse(body, headers=warning_headers(warnings))


def sse(obj: Any) -> str:
    """One server-sent event of a stream."""
    data = obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"
