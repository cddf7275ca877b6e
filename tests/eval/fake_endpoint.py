"""A fake OpenAI-compatible endpoint on 127.0.0.1 (a pytest fixture) whose answers are known:
sample 0 of every item is right, the others only for prompts of even length."""

import socket
import threading
import time

import pytest

from opens1.envs import get_env

TASKS = ["logic/sorting", "chem/formula"]


def _answer_book() -> dict[str, str]:
    """prompt text -> a correct response, for the first held-out cases of TASKS."""
    book = {}
    for name in TASKS:
        env = get_env(name)
        for case in env.cases(6, "heldout"):
            book[case.prompt] = env.sft_response(case)
    return book


@pytest.fixture(scope="module")
def server():
    fastapi = pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    book = _answer_book()
    app = fastapi.FastAPI()
    calls = []

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        calls.append(body)
        prompt = body["messages"][-1]["content"]
        good = book.get(prompt, "Answer: ?")
        choices = []
        for k in range(body.get("n", 1)):
            # Sample 0 is right; others are right only for even-length prompts: a known mean.
            right = k == 0 or len(prompt) % 2 == 0
            content = good if right else "Answer: wrong"
            msg = {"role": "assistant", "content": content, "reasoning_content": "thinking about it"}
            choices.append({"index": k, "message": msg, "finish_reason": "stop"})
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", calls, book
    srv.should_exit = True
    th.join(timeout=5)
