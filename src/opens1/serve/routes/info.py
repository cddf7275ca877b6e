"""What the server is and how it is doing: GET /health and the web page (open to all),
/openapi.json, /v1/models, /v1/models/{name}, /version and /metrics (behind the key)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from opens1 import __version__
from opens1.serve import protocol as P
from opens1.serve.auth import get_state, require_key
from opens1.serve.payload import check_model
from opens1.serve.state import ServerState

WEB_DIR = Path(__file__).resolve().parents[1] / "web"

public = APIRouter()  # liveness and the page; its static files are mounted by serve/app.py
router = APIRouter(dependencies=[Depends(require_key)])


@public.get("/health")
async def health(state: ServerState = Depends(get_state)):
    return {"status": "ok" if state.engine.is_running else "stopped", "model": state.model_name, **state.engine.load()}


@public.get("/")
async def index():
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request):
    return request.app.openapi()


@router.get("/v1/models")
async def models(state: ServerState = Depends(get_state)):
    cards = [P.ModelCard(id=name, max_model_len=state.max_seq_len) for name in state.served_names]
    return P.ModelList(data=cards).model_dump()


@router.get("/v1/models/{name:path}")
async def model(name: str, state: ServerState = Depends(get_state)):
    check_model(state, name)
    return P.ModelCard(id=name, max_model_len=state.max_seq_len).model_dump()


@router.get("/version")
async def version():
    return {"version": __version__}


@router.get("/metrics")
async def metrics(state: ServerState = Depends(get_state)):
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
