"""The OpenAI-compatible HTTP API (FastAPI) in front of the continuous-batching engine.

Routes (all but /health and the page's static files need the API key when one is set)
    POST /v1/chat/completions     chat, streamed (SSE) or not; reasoning, tools, images, series   routes/chat.py
    POST /v1/completions          raw text or token-id prompts                                   routes/completions.py
    POST /tokenize                vLLM's: a prompt or chat messages -> {tokens, count, max_model_len}  routes/tokens.py
    POST /detokenize              vLLM's: {tokens} -> {prompt}                                    routes/tokens.py
    GET  /v1/models               the served model (under each of its names)                     routes/info.py
    GET  /metrics                 Prometheus text format, vLLM's families as opens1:* (metrics.py)  routes/info.py
    GET  /version                 {version}                                                       routes/info.py
    GET  /openapi.json            the schema                                                      routes/info.py
    GET  /health                  liveness and engine load                                        routes/info.py
    GET  /                        the web UI (static files in serve/web/)                         routes/info.py
    GET  /v1/opens1/molecule      SMILES -> SVG drawing (RDKit), for the web UI                  routes/molecule.py

Layers: `payload.py` reads and checks bodies and writes JSON and SSE, `auth.py` holds the
one API-key dependency and the Host check, `bridge.py` takes a checked request to the
engine and back, `state.py` is what they share.

Every request is budgeted before expensive work (`prepare.py`: characters before
tokenizing, pixels from image headers before decoding, series values before arrays), and
the expensive work (template and tokenizer, image tiles, series, RDKit) runs in worker
processes (`workers.py`): the event loop only parses, checks and streams. Every error a
client sees is OpenAI's `{"error": {message, type, param, code}}`, from the handlers here
for what FastAPI itself refuses.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from opens1 import __version__
from opens1.serve.auth import HostCheck
from opens1.serve.protocol import APIError
from opens1.serve.routes import chat, completions, info, molecule, tokens
from opens1.serve.state import ServerState

log = logging.getLogger("opens1.serve")


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="OpenS1", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.s1 = state
    state.render.start()  # spawn the workers now, not on the first request
    state.molecule.start()
    state.metrics  # noqa: B018 -- made now, so that every finished request is observed
    if not state.api_key:  # with a key, a rebinding page has nothing to send
        app.add_middleware(HostCheck, bind=state.bind_host, allowed=tuple(state.allowed_hosts))
    _add_error_handlers(app)
    app.include_router(info.public)
    app.mount("/web", StaticFiles(directory=info.WEB_DIR), name="web")
    for routes in (info, tokens, chat, completions, molecule):
        app.include_router(routes.router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Everything that goes wrong becomes OpenAI's error JSON."""

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
