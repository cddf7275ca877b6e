"""Bad requests get OpenAI-style 4xx errors naming the problem, never a 500, and the
server keeps serving after each one. Capacity limits answer 429 (queue) and 503
(KV cache); a remote image URL is refused without being fetched."""

import base64
import dataclasses
import http.server
import threading
import time

import httpx
import openai
import pytest

from opens1.infer.engine import Engine
from opens1.serve.cli import BackgroundServer

# a hung server or engine must fail the test, not stall the suite
pytestmark = pytest.mark.timeout(120)

OK = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def user(*parts):
    return {**OK, "messages": [{"role": "user", "content": list(parts)}]}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def series(values, rate=360):
    return {"type": "time_series", "time_series": {"values": values, "sampling_rate": rate}}


BAD_BODIES = {
    "invalid_json": (b'{"model": "tiny", "messages": [', 400, None),
    "not_an_object": (b"[1, 2]", 400, None),
    "unknown_model": ({**OK, "model": "gpt-17"}, 404, "model"),
    "missing_messages": ({"model": "tiny"}, 400, "messages"),
    "messages_not_a_list": ({**OK, "messages": "hello"}, 400, "messages"),
    "empty_messages": ({**OK, "messages": []}, 400, "messages"),
    "message_not_an_object": ({**OK, "messages": ["hello"]}, 400, "messages.0"),
    "unknown_role": ({**OK, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    "content_wrong_type": ({**OK, "messages": [{"role": "user", "content": 42}]}, 400, "messages.0.content"),
    "unknown_part_type": (user({"type": "audio", "audio": "x"}), 400, "messages.0.content.0"),
    "text_part_without_text": (user({"type": "text"}), 400, "messages.0.content.0.text"),
    "negative_max_tokens": ({**OK, "max_tokens": -5}, 400, "max_tokens"),
    "zero_max_tokens": ({**OK, "max_tokens": 0}, 400, "max_tokens"),
    "temperature_out_of_range": ({**OK, "temperature": 7}, 400, "temperature"),
    "top_p_zero": ({**OK, "top_p": 0}, 400, "top_p"),
    "n_too_large": ({**OK, "n": 1000}, 400, "n"),
    "too_many_stops": ({**OK, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    "penalties_unsupported": ({**OK, "presence_penalty": 1.0}, 400, "presence_penalty"),
    "max_tokens_over_context": ({**OK, "max_tokens": 100000}, 400, "max_tokens"),
    "prompt_longer_than_context": ({**OK, "messages": [{"role": "user", "content": "word " * 2000}]}, 400, "messages"),
    "remote_image_url": (user(image("https://example.com/cat.png")), 400, "messages.0.content.0.image_url.url"),
    "file_image_url": (user(image("file:///etc/passwd")), 400, "messages.0.content.0.image_url.url"),
    "bad_base64_image": (user(image("data:image/png;base64,@@@not-base64@@@")), 400, "messages.0.content.0.image_url.url"),
    "not_an_image": (user(image("data:image/png;base64," + base64.b64encode(b"just some text").decode())), 400, "messages.0.content.0.image_url.url"),
    "non_image_mime": (user(image("data:text/plain;base64,aGVsbG8=")), 400, "messages.0.content.0.image_url.url"),
    "ragged_series": (user(series([[1.0, 2.0], [3.0]])), 400, "messages.0.content.0.time_series"),
    "nonpositive_rate": (user(series([[1.0]], rate=0)), 400, "messages.0.content.0.time_series.sampling_rate"),
    "thinking_flag_not_bool": ({**OK, "chat_template_kwargs": {"enable_thinking": "yes"}}, 400, "chat_template_kwargs"),
    "forced_tool_choice": ({**OK, "tool_choice": "required"}, 400, "tool_choice"),
}


def assert_openai_error(r: httpx.Response, status: int, param: str | None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    if param is not None:
        assert err["param"] == param, err
    return err


def still_serves(url: str):
    r = httpx.post(url + "/v1/chat/completions", json=OK, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_chat_request(tiny, case):
    body, status, param = BAD_BODIES[case]
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    assert_openai_error(httpx.post(tiny + "/v1/chat/completions", timeout=30, **kw), status, param)
    assert httpx.get(tiny + "/health").json()["status"] == "ok"


@pytest.mark.slow
def test_server_serves_after_bad_requests(tiny):
    for body, _, _ in BAD_BODIES.values():
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        assert httpx.post(tiny + "/v1/chat/completions", timeout=30, **kw).status_code < 500
    still_serves(tiny)


def test_bad_completion_requests(tiny):
    post = lambda body: httpx.post(tiny + "/v1/completions", json=body, timeout=30)
    assert_openai_error(post({"model": "tiny", "prompt": [1, 2, 10**9]}), 400, "prompt")
    assert_openai_error(post({"model": "tiny", "prompt": ""}), 400, "prompt")
    assert_openai_error(post({"model": "tiny", "prompt": "x", "max_tokens": -1}), 400, "max_tokens")
    assert_openai_error(post({"model": "tiny", "prompt": {"a": 1}}), 400, "prompt")
    assert_openai_error(post({"model": "tiny", "prompt": "x", "suffix": "y"}), 400, "suffix")
    still_serves(tiny)


def test_oversized_body(tiny, tiny_state):
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * (tiny_state.max_body_bytes + 10) + b'"}]}'
    headers = {"content-type": "application/json"}
    err = assert_openai_error(httpx.post(tiny + "/v1/chat/completions", content=big, headers=headers, timeout=30), 413, None)
    assert "too large" in err["message"]
    # without a Content-Length (chunked upload) the limit holds too
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    assert_openai_error(httpx.post(tiny + "/v1/chat/completions", content=chunks, headers=headers, timeout=30), 413, None)
    still_serves(tiny)


def test_unknown_route_and_method(tiny):
    assert_openai_error(httpx.get(tiny + "/v1/nothing-here"), 404, None)
    assert_openai_error(httpx.get(tiny + "/v1/chat/completions"), 405, None)


def test_remote_image_is_never_fetched(tiny):
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/cat.png"
        r = httpx.post(tiny + "/v1/chat/completions", json=user(image(url)), timeout=30)
        assert_openai_error(r, 400, "messages.0.content.0.image_url.url")
        assert "never fetches" in r.json()["error"]["message"]
        time.sleep(0.2)
        assert hits == []
    finally:
        httpd.shutdown()


def test_openai_client_sees_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=-1)
    assert "max_tokens" in str(e.value)


def test_api_key(tiny_state):
    state = dataclasses.replace(tiny_state, api_key="s3cret")
    with BackgroundServer(state, own_engine=False) as url:
        assert_openai_error(httpx.post(url + "/v1/chat/completions", json=OK), 401, None)
        wrong = httpx.post(url + "/v1/chat/completions", json=OK, headers={"Authorization": "Bearer nope"})
        assert assert_openai_error(wrong, 401, None)["code"] == "invalid_api_key"
        assert httpx.get(url + "/v1/models").status_code == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="tiny", messages=OK["messages"], max_tokens=2).usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="bad", max_retries=0).models.list()
        assert httpx.get(url + "/health").status_code == 200  # liveness stays open


def test_queue_full_429_and_cache_full_503(tiny_state):
    # one slot, two waiting places, and a cache budget that holds (prompt + 20) + (prompt + 3)
    # but not (prompt + 20) + (prompt + 100); not started yet, so requests stay queued
    p = tiny_state.processor(OK["messages"])["input_ids"].shape[1]
    engine = Engine(tiny_state.engine.model, eos_token_ids=tiny_state.engine.eos_token_ids, max_batch_size=1,
                    max_seq_len=384, max_queue=2, cache_budget_tokens=2 * p + 30)
    state = dataclasses.replace(tiny_state, engine=engine)
    post = lambda url, n: httpx.post(url + "/v1/chat/completions", json={**OK, "max_tokens": n}, timeout=60)
    with BackgroundServer(state) as url:
        waiters = []

        def wait_in_queue(n):
            waiters.append(threading.Thread(target=post, args=(url, n)))
            waiters[-1].start()
            deadline = time.time() + 10
            while engine.load()["waiting"] < len(waiters) and time.time() < deadline:
                time.sleep(0.005)

        wait_in_queue(20)  # promises prompt + 20 tokens of the cache
        # another prompt + 100 cannot be promised too: the KV cache is full
        assert assert_openai_error(post(url, 100), 503, None)["code"] == "kv_cache_full"
        wait_in_queue(3)  # small enough to be promised; the queue is now full
        assert assert_openai_error(post(url, 3), 429, None)["code"] == "queue_full"
        engine.start()
        for w in waiters:
            w.join(60)
        assert engine.load() == {"running": 0, "waiting": 0, "free_slots": 1, "reserved_tokens": 0}
        still_serves(url)
