"""The API under uvicorn: in the foreground for `opens1 serve` (`run`), or in a thread for
tests and benchmarks (`BackgroundServer`)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from opens1.serve.app import create_app
from opens1.serve.state import ServerState


def run(state: ServerState, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted; then stop the worker pools and the engine."""
    try:
        uvicorn.run(create_app(state), host=host, port=port, log_level=log_level)
    finally:
        state.close()
        state.engine.shutdown()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn in a thread, for tests and benchmarks: `with BackgroundServer(state) as url:`."""

    def __init__(self, state: ServerState, host: str = "127.0.0.1", port: int | None = None, *, own_engine: bool = True):
        self.state, self.own_engine = state, own_engine
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(create_app(state), host=host, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="opens1-uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.state.close()  # the worker pools (a later server on this state starts new ones)
        if self.own_engine:
            self.state.engine.shutdown()
