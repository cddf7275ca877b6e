"""The OpenAI-compatible HTTP API (FastAPI) in front of the continuous-batching engine.

Routes
    POST /v1/chat/completions     chat, streamed (SSE) or not; reasoning, tools, images, series
    POST /v1/completions          raw text or token-id prompts
    GET  /v1/models               the one served model
    GET  /v1/opens1/molecule      SMILES -> SVG drawing (RDKit), for the web UI
    GET  /health                  liveness and engine load
    GET  /                        the web UI (static files in serve/web/)

Design choices:
- Bodies are read and validated by hand (size limit, JSON, pydantic), so that every
  bad request becomes an OpenAI-style error `{"error": {message, type, param, code}}`
  with a 4xx status and a message naming the problem; the engine never sees it.
- Chat messages go through the one `Processor` (chat template, image tiles, series)
  and the answer through the one chat parser (`parse_response`). Images must be
  inline data URLs: a remote URL is refused and never fetched (no SSRF, no hangs).
- The engine runs in its own thread; its per-token callbacks are handed to the
  asyncio loop with `call_soon_threadsafe`. A client that goes away cancels its
  requests, which frees their KV-cache slots before the next decode step.
- Streaming follows OpenAI's chunk format; reasoning streams in
  `delta.reasoning_content` (vLLM's field), tool calls arrive in one delta at the end.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from opens1.infer.engine import CacheFull, Engine, EngineStopped, GenerationRequest, QueueFull, TokenEvent
from opens1.infer.sampling import SamplingParams
from opens1.serve import protocol as P
from opens1.serve.text import IncrementalDecoder, OutputText

log = logging.getLogger("opens1.serve")
WEB_DIR = Path(__file__).parent / "web"
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs before decoding them
MAX_SMILES_LEN = 1000


class APIError(Exception):
    """An error the client caused (or a capacity limit), sent as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        body = P.ErrorResponse(error=P.ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status)


@dataclass
class ServerState:
    """Everything the routes need; built by `cli.build_state` (or by tests)."""

    engine: Engine
    tokenizer: Any  # opens1.tokenizer DynamicTokenizer (encode/decode/token_to_id)
    processor: Any  # opens1.Processor
    model_name: str
    api_key: str | None = None
    defaults: P.ServeDefaults = field(default_factory=P.ServeDefaults)
    max_body_bytes: int = 32 * 1024 * 1024
    supports_images: bool = True
    supports_series: bool = True

    @property
    def max_seq_len(self) -> int:
        return self.engine.max_seq_len

    @property
    def vocab_size(self) -> int:
        return int(self.engine.model.config.text.vocab_size)


# ---------------------------------------------------------------- request helpers


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, or a 413/400 naming the problem."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body too large ({declared} bytes; limit {limit})", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body too large (over {limit} bytes)", code="body_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"invalid JSON body: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the JSON body must be an object", code="invalid_json")
    return body


def validation_error(e: ValidationError) -> APIError:
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


_PART_TYPES = {"text", "image_url", "time_series"}
_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none", "function-after"}


def parse_request(model_cls, body: dict):
    try:
        return model_cls.model_validate(body)
    except ValidationError as e:
        raise validation_error(e) from None


def decode_data_url(url: str, param: str):
    """A data: URL -> RGB PIL image. Remote URLs are refused, never fetched."""
    from PIL import Image, UnidentifiedImageError

    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme != "data":
        raise APIError(
            400, f"{param}: only inline data: URLs are accepted (got a {scheme or 'schemeless'} URL); "
            "this server never fetches remote images", param=param, code="invalid_image_url",
        )
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise APIError(400, f"{param}: expected data:image/<type>;base64,<data>", param=param, code="invalid_image")
    mime = header[5:].split(";")[0].strip().lower()
    if mime and not mime.startswith("image/"):
        raise APIError(400, f"{param}: data URL type {mime!r} is not an image", param=param, code="invalid_image")
    try:
        raw = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: the image data is not valid base64", param=param, code="invalid_image") from None
    try:
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise APIError(400, f"{param}: image too large ({img.width}x{img.height})", param=param, code="invalid_image")
        img.load()
        return img.convert("RGB")
    except APIError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise APIError(400, f"{param}: the image data cannot be decoded ({e})", param=param, code="invalid_image") from None


def series_values(ts: P.TimeSeriesData, param: str) -> list[list[float]]:
    """[T][C] finite floats (a flat list is one channel); 400 on ragged or non-finite data."""
    vals = ts.values
    rows = [[float(v)] for v in vals] if vals and not isinstance(vals[0], list) else vals
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise APIError(400, f"{param}.values: every sample must have the same number (>0) of channels", param=param)
    if not all(math.isfinite(v) for r in rows for v in r):
        raise APIError(400, f"{param}.values: values must be finite numbers", param=param)
    return rows


def to_processor_messages(state: ServerState, messages: list[P.ChatMessage]) -> list[dict]:
    """OpenAI messages -> the Processor's message dicts (images decoded, series checked)."""
    out = []
    for i, m in enumerate(messages):
        msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
        if isinstance(m.content, list):
            parts = []
            for j, part in enumerate(m.content):
                param = f"messages.{i}.content.{j}"
                if isinstance(part, P.TextPart):
                    parts.append({"type": "text", "text": part.text})
                elif isinstance(part, P.ImagePart):
                    if not state.supports_images:
                        raise APIError(400, f"{param}: this model has no vision tower; images are not accepted", param=param)
                    if m.role != "user":
                        raise APIError(400, f"{param}: images are only accepted in user messages", param=param)
                    parts.append({"type": "image", "image": decode_data_url(part.image_url.url, param + ".image_url.url")})
                else:
                    if not state.supports_series:
                        raise APIError(400, f"{param}: this model has no time-series tower; series are not accepted", param=param)
                    if m.role != "user":
                        raise APIError(400, f"{param}: time series are only accepted in user messages", param=param)
                    rows = series_values(part.time_series, param + ".time_series")
                    parts.append({"type": "time_series", "time_series": {"values": rows, "sampling_rate": part.time_series.sampling_rate}})
            msg["content"] = parts
        else:
            msg["content"] = m.content or ""
        if m.role == "assistant":
            if m.reasoning_content:
                msg["reasoning_content"] = m.reasoning_content
            if m.tool_calls:
                msg["tool_calls"] = [tc.model_dump() for tc in m.tool_calls]
        if m.role == "tool" and m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


def check_auth(state: ServerState, request: Request) -> None:
    if not state.api_key:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", type="authentication_error", code="invalid_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
        raise APIError(401, "invalid API key", type="authentication_error", code="invalid_api_key")


def check_model(state: ServerState, name: str) -> None:
    if name != state.model_name:
        raise APIError(404, f"the model {name!r} does not exist; this server serves {state.model_name!r}", param="model", code="model_not_found")


# ---------------------------------------------------------------- generation plumbing


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
    """The n choices of one API request, submitted to the engine and drained here."""

    def __init__(self, state: ServerState, prompt_ids: list[int], params: SamplingParams, n: int, stop, thinking_open: bool, split: bool, mm: dict, first_index: int = 0):
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices: list[Choice] = []
        self.prompt_tokens = len(prompt_ids)
        stop_ids = set(state.engine.eos_token_ids) | set(params.stop_token_ids)
        self._hidden_ids = stop_ids  # tokens that end a sequence are not part of its text
        for k in range(n):
            p = params.replace(seed=None if params.seed is None else params.seed + k)
            idx = first_index + k
            req = GenerationRequest(list(prompt_ids), p, self._callback(idx), **mm)
            self.choices.append(Choice(idx, req, OutputText(stop, thinking_open, split), IncrementalDecoder(state.tokenizer)))
        self._by_index = {c.index: c for c in self.choices}

    def _callback(self, idx: int):
        def on_event(ev: TokenEvent) -> None:
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (idx, ev))
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        return on_event

    def submit(self) -> None:
        engine = self.state.engine
        try:
            for c in self.choices:
                engine.submit(c.req)
        except (QueueFull, CacheFull, EngineStopped, ValueError) as e:
            self.cancel()
            if isinstance(e, QueueFull):
                raise APIError(429, str(e), type="rate_limit_error", code="queue_full") from None
            if isinstance(e, CacheFull):
                raise APIError(503, str(e), type="server_overloaded", code="kv_cache_full") from None
            if isinstance(e, EngineStopped):
                raise APIError(503, str(e), type="server_error", code="engine_stopped") from None
            raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None

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

    async def _events(self) -> AsyncIterator[tuple[Choice, Any]]:
        while not self.done:
            if not self.queue.empty():  # drain without a timer: most events arrive in bursts
                idx, ev = self.queue.get_nowait()
            else:
                idx, ev = await self.queue.get()
            c = self._by_index[idx]
            if c.finish_reason is not None:
                continue  # a token that raced a stop-string cancel
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
            yield c, delta

    def _logprob(self, ev: TokenEvent) -> P.TokenLogprob:
        tok = self.state.tokenizer
        text = tok.decode([ev.token_id], skip_special_tokens=False)
        tops = [P.TopLogprob(token=(t := tok.decode([i], skip_special_tokens=False)), logprob=lp, bytes=list(t.encode())) for i, lp in (ev.top_logprobs or [])]
        return P.TokenLogprob(token=text, logprob=ev.logprob, bytes=list(text.encode()), top_logprobs=tops)

    def usage(self) -> P.Usage:
        completion = sum(len(c.token_ids) for c in self.choices)
        return P.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion, total_tokens=self.prompt_tokens + completion)


def parse_final(c: Choice, thinking_open: bool) -> tuple[str | None, str | None, list[P.ToolCall] | None]:
    """(reasoning, content, tool_calls) of a finished choice, through the chat parser.
    Intern-S1 writes `parameters`; OpenAI clients get them as the JSON `arguments` string."""
    from opens1.tokenizer.chat import parse_response

    parsed = parse_response(c.out.text, prompt_ends_in_think=thinking_open)
    calls = [
        P.ToolCall(function=P.FunctionCall(name=tc.name, arguments=json.dumps(tc.arguments, ensure_ascii=False)))
        for tc in parsed.tool_calls
    ]
    return parsed.reasoning or None, parsed.content, calls or None


def sse(obj: Any) -> str:
    data = obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"


# ---------------------------------------------------------------- the app


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="OpenS1", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.s1 = state

    @app.exception_handler(APIError)
    async def _api_error(_req, exc: APIError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return APIError(exc.status_code, f"{req.method} {req.url.path}: {exc.detail}", code=code).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(x) for x in err["loc"][1:]) or None
        return APIError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param).response()

    @app.exception_handler(Exception)
    async def _unexpected(_req, exc: Exception):
        log.exception("unhandled error")
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()

    @app.get("/health")
    async def health():
        return {"status": "ok" if state.engine.is_running else "stopped", "model": state.model_name, **state.engine.load()}

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(state, request)
        card = P.ModelCard(id=state.model_name, max_model_len=state.max_seq_len)
        return P.ModelList(data=[card]).model_dump()

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request):
        check_auth(state, request)
        check_model(state, name)
        return P.ModelCard(id=state.model_name, max_model_len=state.max_seq_len).model_dump()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check_auth(state, request)
        req = parse_request(P.ChatCompletionRequest, await read_json(request, state.max_body_bytes))
        check_model(state, req.model)
        return await chat_completion(state, req, request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        check_auth(state, request)
        req = parse_request(P.CompletionRequest, await read_json(request, state.max_body_bytes))
        check_model(state, req.model)
        return await text_completion(state, req, request)

    @app.get("/v1/opens1/molecule")
    async def molecule(request: Request, smiles: str = ""):
        check_auth(state, request)
        return Response(molecule_svg(smiles), media_type="image/svg+xml")

    @app.get("/")
    async def index():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    return app


def molecule_svg(smiles: str, size: int = 320) -> str:
    """An SVG drawing of a SMILES string (RDKit), or a 400 for an invalid one."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Draw import rdMolDraw2D

    smiles = smiles.strip()
    if not smiles or len(smiles) > MAX_SMILES_LEN:
        raise APIError(400, f"smiles: expected a SMILES string of 1..{MAX_SMILES_LEN} characters", param="smiles")
    RDLogger.DisableLog("rdApp.*")  # a bad SMILES is the client's problem, not log noise
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise APIError(400, f"smiles: {smiles!r} is not a valid SMILES string", param="smiles", code="invalid_smiles")
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


# ---------------------------------------------------------------- chat


def sampling_params(state: ServerState, req, prompt_len: int, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
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
    # the request's values, the server's defaults where it left a field unset
    given = {k: getattr(req, k) for k in ("temperature", "top_p", "min_p") if getattr(req, k) is not None}
    if req.top_k is not None:
        given["top_k"] = max(req.top_k, 0)  # -1 or 0: off (vLLM's convention)
    return d.sampling.replace(max_new_tokens=max_tokens, seed=req.seed, ignore_eos=req.ignore_eos, logprobs=logprobs,
                              **given)


def render_chat(state: ServerState, req: P.ChatCompletionRequest) -> tuple[dict, bool, bool]:
    """Processor inputs, whether thinking is on, and whether the prompt opened a think block."""
    kwargs = req.chat_template_kwargs or {}
    thinking = bool(kwargs.get("enable_thinking", True))
    if isinstance(req.tool_choice, dict) or req.tool_choice == "required":
        raise APIError(400, "tool_choice: only 'auto' and 'none' are supported", param="tool_choice")
    tools = None
    if req.tools and req.tool_choice != "none":
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
    messages = to_processor_messages(state, req.messages)
    try:
        inputs = state.processor(messages, tools=tools, enable_thinking=thinking, add_generation_prompt=True)
    except APIError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise APIError(400, f"messages: {e}", param="messages") from None
    ids = inputs["input_ids"][0].tolist()
    think_id = _token_id(state.tokenizer, "<think>")
    # Intern-S1's thinking generation prompt ends in `<think>` (maybe plus a newline)
    thinking_open = thinking and think_id is not None and think_id in ids[-3:]
    return inputs, thinking, thinking_open


def _token_id(tok, s: str) -> int | None:
    try:
        return tok.token_to_id(s)
    except (KeyError, ValueError):
        return None


async def chat_completion(state: ServerState, req: P.ChatCompletionRequest, request: Request):
    # decoding images and tiling / encoding series is CPU work: off the event loop, so
    # other clients' streams keep flowing meanwhile
    inputs, _thinking, thinking_open = await run_in_threadpool(render_chat, state, req)
    prompt_ids = inputs["input_ids"][0].tolist()
    n_lp = (req.top_logprobs or 0) if req.logprobs else None
    params = sampling_params(state, req, len(prompt_ids), req.max_completion_tokens or req.max_tokens, n_lp)
    mm = {k: inputs.get(k) for k in ("pixel_values", "time_series", "sampling_rates")}
    gen = Generation(state, prompt_ids, params, req.n, req.stop, thinking_open, True, mm)
    gen.submit()
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_chat_stream(state, gen, rid, thinking_open, include_usage), media_type="text/event-stream")
    try:
        async for _ in gen.events(request):
            pass
    finally:
        gen.cancel()
    return _chat_response(state, gen, rid, thinking_open, req.logprobs)


def _finish_error(c: Choice) -> APIError:
    # the model's own checks (e.g. placeholder/feature counts) raise ValueError: the input's fault
    if (c.error or "").startswith("ValueError"):
        return APIError(400, f"the model rejected the input: {c.error}", code="invalid_input")
    return APIError(500, f"generation failed: {c.error}", type="server_error", code="generation_error")


def _chat_response(state, gen: Generation, rid: str, thinking_open: bool, logprobs: bool):
    choices = []
    for c in gen.choices:
        if c.finish_reason == "error":
            # bad multimodal input that only the model could detect, or an engine fault
            raise _finish_error(c)
        reasoning, content, calls = parse_final(c, thinking_open)
        finish = "tool_calls" if calls else c.finish_reason
        msg = P.ResponseMessage(content=content, reasoning_content=reasoning, tool_calls=calls)
        lp = P.ChoiceLogprobs(content=c.logprobs) if logprobs else None
        choices.append(P.ChatChoice(index=c.index, message=msg, finish_reason=finish, logprobs=lp))
    return P.ChatCompletionResponse(id=rid, model=state.model_name, choices=choices, usage=gen.usage()).model_dump()


async def _chat_stream(state, gen: Generation, rid: str, thinking_open: bool, include_usage: bool):
    def chunk(index: int, delta: P.DeltaMessage, finish: str | None = None, lp=None):
        return sse(P.ChatCompletionChunk(id=rid, model=state.model_name, choices=[P.ChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=lp)]))

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
                yield chunk(c.index, P.DeltaMessage(reasoning_content=delta.reasoning or None if delta else None, content=delta.content or None if delta else None), lp=lp)
            if c.finish_reason is None:
                continue
            if c.finish_reason == "error":
                err = P.ErrorResponse(error=P.ErrorBody(message=f"generation failed: {c.error}", type="server_error", code="generation_error"))
                yield sse(err)
                continue
            _, _, calls = parse_final(c, thinking_open)
            if calls:
                deltas = [P.DeltaToolCall(index=k, id=tc.id, type="function", function={"name": tc.function.name, "arguments": tc.function.arguments}) for k, tc in enumerate(calls)]
                yield chunk(c.index, P.DeltaMessage(tool_calls=deltas))
            yield chunk(c.index, P.DeltaMessage(), finish="tool_calls" if calls else c.finish_reason)
        if include_usage:
            yield sse(P.ChatCompletionChunk(id=rid, model=state.model_name, choices=[], usage=gen.usage()))
        yield "data: [DONE]\n\n"
    except Exception as e:  # headers are sent: report in-band instead of dropping the connection
        log.exception("chat stream failed")
        yield sse(P.ErrorResponse(error=P.ErrorBody(message=f"internal error: {type(e).__name__}: {e}", type="server_error")))
        yield "data: [DONE]\n\n"
    finally:
        gen.cancel()  # client gone or stream over: free the slots now


# ---------------------------------------------------------------- completions


def completion_prompts(state: ServerState, prompt) -> list[tuple[list[int], str]]:
    """OpenAI's four prompt forms -> [(ids, text)]. Text is encoded as text: special-token
    strings in it stay text; raw control tokens can be sent as token ids."""
    tok = state.tokenizer
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt: must not be empty", param="prompt")
    out = []
    for p in prompt:
        if isinstance(p, str):
            ids = tok.encode(p)
            text = p
        else:
            bad = [t for t in p if not 0 <= t < state.vocab_size]
            if bad:
                raise APIError(400, f"prompt: token id {bad[0]} is outside the vocabulary (0..{state.vocab_size - 1})", param="prompt")
            ids, text = list(p), tok.decode(list(p), skip_special_tokens=False)
        if not ids:
            raise APIError(400, "prompt: must not be empty", param="prompt")
        out.append((ids, text))
    return out


async def text_completion(state: ServerState, req: P.CompletionRequest, request: Request):
    prompts = await run_in_threadpool(completion_prompts, state, req.prompt)
    gens: list[Generation] = []
    try:
        for k, (ids, _) in enumerate(prompts):
            max_tokens = req.max_tokens or state.defaults.completion_max_tokens
            params = sampling_params(state, req, len(ids), min(max_tokens, state.max_seq_len - len(ids)) if req.max_tokens is None else max_tokens, req.logprobs)
            gen = Generation(state, ids, params, req.n, req.stop, False, False, {}, first_index=k * req.n)
            gen.submit()
            gens.append(gen)
    except APIError:
        for g in gens:
            g.cancel()
        raise
    rid = f"cmpl-{uuid.uuid4().hex}"
    if req.stream:
        return StreamingResponse(_completion_stream(state, gens, prompts, req, rid), media_type="text/event-stream")
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
                raise _finish_error(c)
            body = (text if req.echo else "") + c.out.text
            choices.append(P.CompletionChoice(index=c.index, text=body, finish_reason=c.finish_reason, logprobs=_legacy_logprobs(c) if req.logprobs is not None else None))
    usage = P.Usage()
    for g in gens:
        u = g.usage()
        usage.prompt_tokens += u.prompt_tokens
        usage.completion_tokens += u.completion_tokens
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return P.CompletionResponse(id=rid, model=state.model_name, choices=choices, usage=usage).model_dump()


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


async def _completion_stream(state, gens: list[Generation], prompts, req: P.CompletionRequest, rid: str):
    # merge the prompts' event streams into one SSE stream
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(g: Generation):
        async for c, delta in g.events():
            await queue.put((c, delta))
        await queue.put(None)

    tasks = [asyncio.create_task(pump(g)) for g in gens]
    sent_lp: dict[int, int] = {}
    try:
        if req.echo:
            for g, (_, text) in zip(gens, prompts):
                for c in g.choices:
                    yield sse(P.CompletionResponse(id=rid, model=state.model_name, choices=[P.CompletionChoice(index=c.index, text=text, finish_reason=None)]))
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            c, delta = item
            if c.finish_reason == "error":
                yield sse(P.ErrorResponse(error=P.ErrorBody(message=f"generation failed: {c.error}", type="server_error", code="generation_error")))
                continue
            lp = None
            if req.logprobs is not None:
                lp = _legacy_logprobs(c, sent_lp.get(c.index, 0))
                sent_lp[c.index] = len(c.logprobs)
            text = delta.content if delta else ""
            if text or c.finish_reason or lp is not None:
                yield sse(P.CompletionResponse(id=rid, model=state.model_name, choices=[P.CompletionChoice(index=c.index, text=text, finish_reason=c.finish_reason, logprobs=lp)]))
        if req.stream_options and req.stream_options.include_usage:
            usage = P.Usage()
            for g in gens:
                u = g.usage()
                usage.prompt_tokens += u.prompt_tokens
                usage.completion_tokens += u.completion_tokens
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
            yield sse(P.CompletionResponse(id=rid, model=state.model_name, choices=[], usage=usage))
        yield "data: [DONE]\n\n"
    except Exception as e:
        log.exception("completion stream failed")
        yield sse(P.ErrorResponse(error=P.ErrorBody(message=f"internal error: {type(e).__name__}: {e}", type="server_error")))
        yield "data: [DONE]\n\n"
    finally:
        for t in tasks:
            t.cancel()
        for g in gens:
            g.cancel()
