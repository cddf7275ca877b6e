"""The OpenAI-compatible HTTP API (FastAPI) in front of the continuous-batching engine.

Routes (all but /health and the page's static files need the API key when one is set)
    POST /v1/chat/completions     chat, streamed (SSE) or not; reasoning, tools, images, series
    POST /v1/completions          raw text or token-id prompts
    GET  /v1/models               the served model (under each of its names)
    POST /tokenize                vLLM's: a prompt or chat messages -> {tokens, count, max_model_len}
    POST /detokenize              vLLM's: {tokens} -> {prompt}
    GET  /metrics                 Prometheus text format, vLLM's families as opens1:* (serve/metrics.py)
    GET  /version                 {version}
    GET  /v1/opens1/molecule      SMILES -> SVG drawing (RDKit), for the web UI
    GET  /openapi.json            the schema
    GET  /health                  liveness and engine load
    GET  /                        the web UI (static files in serve/web/)

Design choices:
- Bodies are read and validated by hand (JSON content type, size limit, pydantic-core's
  strict parser, sizes, pydantic), so that every bad request becomes an OpenAI-style
  error `{"error": {message, type, param, code}}` with a 4xx status and a message
  naming the problem; the engine never sees it.
- Every request is budgeted before expensive work (`prepare.py`: characters before
  tokenizing, pixels from image headers before decoding, series values before arrays),
  and the expensive work (template and tokenizer, image tiles, series, RDKit) runs in
  worker processes (`workers.py`): the event loop only parses, checks and streams.
- Chat messages go through the one `Processor` (chat template, image tiles, series)
  and the answer through the one chat parser (`parse_response`). Images must be
  inline data URLs: a remote URL is refused and never fetched (no SSRF, no hangs).
- A keyless server answers only to Host names it is bound to (`host_allowed`), and
  takes only `application/json` bodies: a web page can neither rebind a name to it nor
  post a simple cross-origin form to it.
- The engine runs in its own thread; its per-token callbacks are handed to the
  asyncio loop with `call_soon_threadsafe`. A client that goes away cancels its
  requests, which frees their KV-cache slots before the next decode step.
- Streaming follows OpenAI's chunk format; reasoning streams in
  `delta.reasoning_content` (vLLM's field), tool calls arrive in one delta at the end.
- `response_format` and `thinking_budget` become the engine request's `Constraint`
  (serve/structured.py), built in a thread before submission: the engine thread only
  asks it for a mask per token of that request.
- Fields a request sends that the server does not use are never dropped silently: they
  are named in a `Warning: 299` header, a `warnings` list in the JSON body (not streamed)
  and a log line.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import pydantic_core
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from opens1 import __version__
from opens1.infer.engine import CacheFull, Engine, EngineStopped, GenerationRequest, PromptTooLong, QueueFull, TokenEvent
from opens1.infer.sampling import SamplingParams
from opens1.processing.images import MAX_IMAGE_PIXELS
from opens1.processing.series import MAX_SERIES_VALUES
from opens1.serve import prepare
from opens1.serve import protocol as P
from opens1.serve.molecule import MAX_SMILES_LEN, molecule_svg
from opens1.serve.protocol import APIError
from opens1.serve.text import IncrementalDecoder, OutputText
from opens1.serve.workers import Busy, WorkerDied, Workers

log = logging.getLogger("opens1.serve")
WEB_DIR = Path(__file__).parent / "web"


@dataclass
class ServerState:
    """Everything the routes need; built by `cli.build_state` (or by tests)."""

    engine: Engine
    tokenizer: Any  # opens1.tokenizer DynamicTokenizer (encode/decode/token_to_id)
    processor: Any  # opens1.Processor
    model_name: str  # the first served name: what responses and /metrics report
    api_key: str | None = None
    aliases: tuple[str, ...] = ()  # further names clients may send (--served-model-name A B ...)
    # chat message content: added-token strings stay text (False), or are parsed as HF/vLLM do
    special_tokens_in_content: bool = False
    defaults: P.ServeDefaults = field(default_factory=P.ServeDefaults)
    max_body_bytes: int = 32 * 1024 * 1024
    supports_images: bool = True
    supports_series: bool = True
    # request budgets, checked before any expensive work (serve/prepare.py)
    chars_per_token: int = prepare.CHARS_PER_TOKEN  # prompt characters allowed per token of context
    max_image_pixels: int = MAX_IMAGE_PIXELS  # per image; the processor's decoder never takes more than 40 M
    max_request_pixels: int = prepare.MAX_REQUEST_PIXELS
    max_series_values: int = MAX_SERIES_VALUES
    # worker processes for tokenization, images and RDKit (0: threads in this process)
    cpu_workers: int = 2
    # the Host header check of a keyless server: the address it is bound to, and more names
    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    _render: Workers | None = field(default=None, init=False, repr=False)
    _molecule: Workers | None = field(default=None, init=False, repr=False)
    _grammar_vocab: Any = field(default=None, init=False, repr=False)

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.model_name, *[a for a in self.aliases if a != self.model_name])

    @property
    def metrics(self):
        """The engine's Prometheus metrics (made on first use; they observe the engine, so
        servers that share one engine, as tests do, share its numbers)."""
        from opens1.serve.metrics import Metrics

        m = getattr(self.engine, "metrics", None)
        if not isinstance(m, Metrics):
            m = self.engine.metrics = Metrics(self.engine, self.model_name)
            self.engine.on_finish = m.observe
        return m

    @property
    def max_seq_len(self) -> int:
        return self.engine.max_seq_len

    @property
    def vocab_size(self) -> int:
        return int(self.engine.model.config.text.vocab_size)

    @property
    def prompt_char_limit(self) -> int:
        return self.max_seq_len * self.chars_per_token

    @property
    def render(self) -> Workers:
        """The pool that tokenizes prompts and decodes images and series (context: the Processor)."""
        if self._render is None:
            self._render = Workers("render", processes=self.cpu_workers, context=self.processor)
        return self._render

    @property
    def molecule(self) -> Workers:
        """The pool that draws molecules (RDKit); its own, so drawings never delay prompts."""
        if self._molecule is None:
            self._molecule = Workers("molecule", processes=min(self.cpu_workers, 1), max_pending=16)
        return self._molecule

    def close(self) -> None:
        """Stop the worker pools (they restart on the next request)."""
        for pool in (self._render, self._molecule):
            if pool is not None:
                pool.close()


# ---------------------------------------------------------------- request helpers


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


def check_auth(state: ServerState, request: Request) -> None:
    if not state.api_key:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", type="authentication_error", code="invalid_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
        raise APIError(401, "invalid API key", type="authentication_error", code="invalid_api_key")


LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def host_allowed(host: str, bind: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a keyless server answers a request whose Host header names `host`.

    A DNS-rebinding page reaches a local server under the attacker's own domain name, so
    the check is on names: loopback names and addresses, the address the server is bound
    to (any address of this machine when bound to 0.0.0.0 or ::), and `allowed` (exact
    names, `*.suffix` patterns, or `*` for any)."""
    name = _host_name(host)
    if not name:
        return True  # no Host header (HTTP/1.0): not a browser
    if "*" in allowed or name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        return True
    bind_name = _host_name(bind)
    if name == bind_name or (ip is not None and bind_name in ("0.0.0.0", "::", "")):
        return True
    return any(name == a.lower() or (a.startswith("*.") and name.endswith(a[1:].lower())) for a in allowed)


def _host_name(host: str) -> str:
    """'Example.COM:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class HostCheck:
    """ASGI middleware: a 400 for a Host the server does not answer to (`host_allowed`)."""

    def __init__(self, app, bind: str, allowed: tuple[str, ...]):
        self.app, self.bind, self.allowed = app, bind, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not host_allowed(host, self.bind, self.allowed):
                err = APIError(400, f"this server does not answer to the host {host!r}; start it with "
                               "--allowed-hosts to add names (or --api-key)", code="invalid_host")
                await err.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_model(state: ServerState, name: str) -> None:
    if name not in state.served_names:
        served = " or ".join(repr(n) for n in state.served_names)
        raise APIError(404, f"the model {name!r} does not exist; this server serves {served}", param="model", code="model_not_found")


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

    def __init__(self, state: ServerState, prompt_ids: list[int], params: SamplingParams, n: int, stop, thinking_open: bool,
                 split: bool, mm: dict, first_index: int = 0, constraints: list | None = None):
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices: list[Choice] = []
        self.prompt_tokens = len(prompt_ids)
        stop_ids = set(state.engine.eos_token_ids) | set(params.stop_token_ids)
        self._hidden_ids = stop_ids  # tokens that end a sequence are not part of its text
        for k in range(n):
            # choice k is seeded seed + k, wrapped into torch's seed range (2^64 values; -1 and
            # 2^64 - 1 seed the same generator)
            p = params.replace(seed=None if params.seed is None else (params.seed + k) % 2**64)
            idx = first_index + k
            req = GenerationRequest(list(prompt_ids), p, self._callback(idx), constraint=constraints[k] if constraints else None, **mm)
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
            if isinstance(e, PromptTooLong):
                raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None
            raise APIError(400, str(e), code="invalid_value") from None

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
    app = FastAPI(title="OpenS1", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.s1 = state
    state.render.start()  # spawn the workers now, not on the first request
    state.molecule.start()
    state.metrics  # noqa: B018 -- made now, so that every finished request is observed
    if not state.api_key:  # with a key, a rebinding page has nothing to send
        app.add_middleware(HostCheck, bind=state.bind_host, allowed=tuple(state.allowed_hosts))

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

    # liveness and the page's static files are open; everything else is behind the key
    @app.get("/health")
    async def health():
        return {"status": "ok" if state.engine.is_running else "stopped", "model": state.model_name, **state.engine.load()}

    @app.get("/")
    async def index():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    async def require_key(request: Request) -> None:
        check_auth(state, request)

    api = APIRouter(dependencies=[Depends(require_key)])

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi():
        return app.openapi()

    @api.get("/v1/models")
    async def models():
        cards = [P.ModelCard(id=name, max_model_len=state.max_seq_len) for name in state.served_names]
        return P.ModelList(data=cards).model_dump()

    @api.get("/v1/models/{name:path}")
    async def model(name: str):
        check_model(state, name)
        return P.ModelCard(id=name, max_model_len=state.max_seq_len).model_dump()

    @api.get("/version")
    async def version():
        return {"version": __version__}

    @api.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @api.post("/tokenize")
    async def tokenize(request: Request):
        raw = await read_body(request, state.max_body_bytes)
        req = await run_in_threadpool(parse_body, state, raw, P.TokenizeRequest)
        check_model(state, req.model)
        return await tokenize_request(state, req)

    @api.post("/detokenize")
    async def detokenize(request: Request):
        raw = await read_body(request, state.max_body_bytes)
        req = await run_in_threadpool(parse_body, state, raw, P.DetokenizeRequest)
        check_model(state, req.model)
        n = len(state.tokenizer)
        bad = next((t for t in req.tokens if not 0 <= t < n), None)
        if bad is not None:
            raise APIError(400, f"tokens: token id {bad} is outside the tokenizer's vocabulary (0..{n - 1})", param="tokens")
        text = state.tokenizer.decode(req.tokens, skip_special_tokens=False)
        return P.DetokenizeResponse(prompt=text).model_dump()

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await read_body(request, state.max_body_bytes)
        req = await run_in_threadpool(parse_body, state, raw, P.ChatCompletionRequest)
        check_model(state, req.model)
        return await chat_completion(state, req, request)

    @api.post("/v1/completions")
    async def completions(request: Request):
        raw = await read_body(request, state.max_body_bytes)
        req = await run_in_threadpool(parse_body, state, raw, P.CompletionRequest)
        check_model(state, req.model)
        return await text_completion(state, req, request)

    @api.get("/v1/opens1/molecule")
    async def molecule(smiles: str = ""):
        smiles = smiles.strip()
        if not smiles or len(smiles) > MAX_SMILES_LEN:
            raise APIError(400, f"smiles: expected a SMILES string of 1..{MAX_SMILES_LEN} characters", param="smiles")
        try:
            svg = await in_worker(state.molecule, molecule_svg, smiles)
        except ValueError as e:
            raise APIError(400, f"smiles: {e}", param="smiles", code="invalid_smiles") from None
        return Response(svg, media_type="image/svg+xml")

    app.include_router(api)
    return app


async def in_worker(pool: Workers, fn, *args):
    """fn(context, *args) in a worker process; the pool's limits as API errors."""
    try:
        return await pool.run(fn, *args)
    except Busy as e:
        raise APIError(429, str(e), type="rate_limit_error", code="server_busy") from None
    except WorkerDied as e:
        raise APIError(500, str(e), type="server_error", code="worker_died") from None


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
    knobs = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
    given = {k: getattr(req, k) for k in knobs if getattr(req, k) is not None}
    if req.top_k is not None:
        # -1 or 0: off (vLLM's convention); so is any k past the vocabulary (all tokens kept)
        given["top_k"] = req.top_k if 0 < req.top_k < state.vocab_size else 0
    return d.sampling.replace(max_new_tokens=max_tokens, seed=req.seed, ignore_eos=req.ignore_eos, logprobs=logprobs,
                              **given)


async def render_in_worker(state: ServerState, fn, *args, param: str = "messages"):
    """A `prepare` rendering function in a render worker; bad input it finds is a 400."""
    try:
        return await in_worker(state.render, fn, *args)
    except (ValueError, TypeError, KeyError) as e:
        msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise APIError(400, msg if msg.startswith(param) else f"{param}: {msg}", param=param) from None


def _multimodal(out: dict) -> dict:
    """The worker's numpy arrays as the tensors the engine hands the model."""
    import torch

    pv, ts = out["pixel_values"], out["time_series"]
    return {
        "pixel_values": None if pv is None else torch.from_numpy(pv),
        "time_series": None if ts is None else [torch.from_numpy(x) for x in ts],
        "sampling_rates": out["sampling_rates"],
    }


async def chat_completion(state: ServerState, req: P.ChatCompletionRequest, request: Request):
    # checks and budgets first (cheap; no pixel decoded, nothing tokenized), then the
    # template, tokenization, image tiles and series in a worker process, so neither a
    # heavy prompt nor the GIL-holding tokenizer can stall other clients
    messages, tools = await run_in_threadpool(prepare.chat_inputs, state, req)
    thinking = bool((req.chat_template_kwargs or {}).get("enable_thinking", True))
    out = await render_in_worker(state, prepare.render_chat, messages, tools, thinking, state.special_tokens_in_content)
    prompt_ids, thinking_open = out["input_ids"], out["thinking_open"]
    n_lp = (req.top_logprobs or 0) if req.logprobs else None
    params = sampling_params(state, req, len(prompt_ids), req.max_completion_tokens or req.max_tokens, n_lp)
    notes: list[str] = []
    constraints = await structured_constraints(state, req, params, req.n, thinking_open=thinking_open, notes=notes)
    warnings = warnings_of(req, notes)
    gen = Generation(state, prompt_ids, params, req.n, req.stop, thinking_open, True, _multimodal(out), constraints=constraints)
    gen.submit()
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_chat_stream(state, gen, rid, thinking_open, include_usage), media_type="text/event-stream",
                                 headers=warning_headers(warnings))
    try:
        async for _ in gen.events(request):
            pass
    finally:
        gen.cancel()
    return _json(_chat_response(state, gen, rid, thinking_open, req.logprobs), warnings)


def _json(body: dict, warnings: list[str]) -> JSONResponse:
    if warnings:
        body["warnings"] = warnings
    return JSONResponse(body, headers=warning_headers(warnings))


async def structured_constraints(state: ServerState, req, params: SamplingParams, n: int, *, thinking_open: bool,
                                 notes: list[str]) -> list | None:
    """The engine constraints of a request's n choices for its `response_format` and
    `thinking_budget` (None: unconstrained). Grammars are built in a thread: llguidance
    releases the GIL while it builds one, and the event loop carries on."""
    from opens1.serve import structured as S

    rf = req.response_format
    schema = None if rf is None else S.response_schema(rf)
    budget = getattr(req, "thinking_budget", None)
    if budget is not None and not thinking_open:
        notes.append("thinking_budget has no effect: thinking is off")
        budget = None
    if schema is None and budget is None:
        return None
    if schema is not None:
        if req.ignore_eos:
            raise APIError(400, "ignore_eos cannot be combined with a JSON response_format (the JSON ends the answer)",
                           param="ignore_eos")
        if len(json.dumps(schema)) > state.prompt_char_limit:
            raise APIError(400, f"response_format: the schema is longer than the prompt budget ({state.prompt_char_limit:,} "
                           "characters)", param="response_format", code="context_length_exceeded")
        if thinking_open:
            # the reasoning gets half the tokens by default, so the answer always has room
            if budget is None:
                budget = max(1, params.max_new_tokens // 2)
            elif budget >= params.max_new_tokens:
                raise APIError(400, f"thinking_budget ({budget}) must be less than max_tokens ({params.max_new_tokens}), "
                               "so that the response_format content fits", param="thinking_budget")
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


# ---------------------------------------------------------------- tokenize


async def tokenize_request(state: ServerState, req: P.TokenizeRequest) -> dict:
    """vLLM's /tokenize: a raw prompt as /v1/completions reads it (added-token strings are
    their tokens), or messages rendered as /v1/chat/completions renders them; both go
    through the same budgets and worker processes as generation requests."""
    if req.prompt is not None:
        checked = prepare.completion_inputs(state, req.prompt)
        (ids, _), = await render_in_worker(state, prepare.completion_prompts, checked, param="prompt")
    else:
        chat = P.ChatCompletionRequest.model_construct(model=req.model, messages=req.messages, tools=req.tools,
                                                       tool_choice=None)
        messages, tools = await run_in_threadpool(prepare.chat_inputs, state, chat)
        thinking = bool((req.chat_template_kwargs or {}).get("enable_thinking", True))
        out = await render_in_worker(state, prepare.render_chat, messages, tools, thinking, state.special_tokens_in_content,
                                     req.add_generation_prompt)
        ids = out["input_ids"]
    strs = [state.tokenizer.id_to_token(i) for i in ids] if req.return_token_strs else None
    return P.TokenizeResponse(count=len(ids), max_model_len=state.max_seq_len, tokens=ids, token_strs=strs).model_dump(
        exclude_none=True)


# ---------------------------------------------------------------- completions


async def text_completion(state: ServerState, req: P.CompletionRequest, request: Request):
    checked = prepare.completion_inputs(state, req.prompt)
    prompts = await render_in_worker(state, prepare.completion_prompts, checked, param="prompt")
    gens: list[Generation] = []
    warnings = warnings_of(req)
    try:
        for k, (ids, _) in enumerate(prompts):
            max_tokens = req.max_tokens or state.defaults.completion_max_tokens
            params = sampling_params(state, req, len(ids), min(max_tokens, state.max_seq_len - len(ids)) if req.max_tokens is None else max_tokens, req.logprobs)
            constraints = await structured_constraints(state, req, params, req.n, thinking_open=False, notes=[])
            gen = Generation(state, ids, params, req.n, req.stop, False, False, {}, first_index=k * req.n, constraints=constraints)
            gen.submit()
            gens.append(gen)
    except APIError:
        for g in gens:
            g.cancel()
        raise
    rid = f"cmpl-{uuid.uuid4().hex}"
    if req.stream:
        return StreamingResponse(_completion_stream(state, gens, prompts, req, rid), media_type="text/event-stream",
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
                raise _finish_error(c)
            body = (text if req.echo else "") + c.out.text
            choices.append(P.CompletionChoice(index=c.index, text=body, finish_reason=c.finish_reason, logprobs=_legacy_logprobs(c) if req.logprobs is not None else None))
    usage = P.Usage()
    for g in gens:
        u = g.usage()
        usage.prompt_tokens += u.prompt_tokens
        usage.completion_tokens += u.completion_tokens
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    return _json(P.CompletionResponse(id=rid, model=state.model_name, choices=choices, usage=usage).model_dump(), warnings)


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
