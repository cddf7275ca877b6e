"""Bad requests get OpenAI-style 4xx errors naming the problem, never a 500, and the
server keeps serving after each one. Capacity limits answer 429 (queue) and 503
(KV cache); a remote image URL is refused without being fetched."""

import base64
import dataclasses
import http.server
import json
import threading
import time

import httpx
import openai
import pytest

from opens1.infer.engine import Engine
from opens1.serve.auth import host_allowed
from opens1.serve.server import BackgroundServer

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
    "presence_penalty_out_of_range": ({**OK, "presence_penalty": 2.5}, 400, "presence_penalty"),
    "frequency_penalty_out_of_range": ({**OK, "frequency_penalty": -3}, 400, "frequency_penalty"),
    "repetition_penalty_zero": ({**OK, "repetition_penalty": 0}, 400, "repetition_penalty"),
    "json_schema_without_schema": ({**OK, "response_format": {"type": "json_schema"}}, 400, "response_format"),
    "unknown_response_format": ({**OK, "response_format": {"type": "yaml"}}, 400, "response_format.type"),
    "invalid_json_schema": ({**OK, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}}, 400, "response_format"),
    "response_format_with_ignore_eos": ({**OK, "ignore_eos": True, "response_format": {"type": "json_object"}}, 400, "ignore_eos"),
    "thinking_budget_zero": ({**OK, "thinking_budget": 0}, 400, "thinking_budget"),
    "thinking_budget_leaves_no_room": ({**OK, "max_tokens": 8, "thinking_budget": 8, "response_format": {"type": "json_object"}}, 400, "thinking_budget"),
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
    # malformed in ways Python's json accepts and later code cannot take (these were 500s)
    "deep_json": (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None),
    "deep_tool_schema": ({**OK, "tools": [{"type": "function", "function": {"name": "f", "parameters": json.loads('{"a":' * 900 + "1" + "}" * 900)}}]}, 400, None),
    "lone_surrogate": (b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800 b"}]}', 400, None),
    "lone_low_surrogate": (b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udc00"}]}', 400, None),
    "nan": (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, None),
    "seed_too_large": ({**OK, "seed": 2**64}, 400, "seed"),
    "seed_too_small": ({**OK, "seed": -(2**63) - 1}, 400, "seed"),
    "stop_too_long": ({**OK, "stop": "x" * 1001}, 400, "stop"),
    "too_many_messages": ({**OK, "messages": [{"role": "user", "content": "x"}] * 5000}, 400, "messages"),
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


def test_bad_completion_requests(tiny, tiny_state):
    post = lambda body: httpx.post(tiny + "/v1/completions", json=body, timeout=30)
    assert_openai_error(post({"model": "tiny", "prompt": [1, 2, 10**9]}), 400, "prompt")
    assert_openai_error(post({"model": "tiny", "prompt": ""}), 400, "prompt")
    assert_openai_error(post({"model": "tiny", "prompt": "x", "max_tokens": -1}), 400, "max_tokens")
    assert_openai_error(post({"model": "tiny", "prompt": {"a": 1}}), 400, "prompt")
    assert_openai_error(post({"model": "tiny", "prompt": "x", "suffix": "y"}), 400, "suffix")
    # an id the model's vocabulary has (padding past the tokenizer) but the tokenizer cannot decode: the client's error
    pad = len(tiny_state.tokenizer)
    assert pad < tiny_state.vocab_size
    assert "tokenizer" in assert_openai_error(post({"model": "tiny", "prompt": [1, pad]}), 400, "prompt")["message"]
    # a lone surrogate in a prompt, which the tokenizer cannot encode: the client's error
    raw = b'{"model": "tiny", "prompt": "a\\ud800b"}'
    r = httpx.post(tiny + "/v1/completions", content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert_openai_error(r, 400, None)
    still_serves(tiny)


def test_bad_tokenize_and_detokenize_requests(tiny, tiny_state):
    tok = lambda body: httpx.post(tiny + "/tokenize", json=body, timeout=30)
    detok = lambda body: httpx.post(tiny + "/detokenize", json=body, timeout=30)
    assert_openai_error(tok({"model": "tiny"}), 400, None)  # neither prompt nor messages
    assert_openai_error(tok({"model": "tiny", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}), 400, None)
    assert_openai_error(tok({"model": "nope", "prompt": "x"}), 404, "model")
    assert_openai_error(tok({"model": "tiny", "prompt": ""}), 400, "prompt")
    limit = tiny_state.prompt_char_limit
    assert assert_openai_error(tok({"model": "tiny", "prompt": "x" * (limit + 1)}), 400, "prompt")["code"] == "context_length_exceeded"
    assert_openai_error(tok({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}), 400, "messages.0.role")
    assert_openai_error(detok({"model": "tiny", "tokens": [1, len(tiny_state.tokenizer)]}), 400, "tokens")
    assert_openai_error(detok({"model": "tiny", "tokens": [-1]}), 400, "tokens")
    assert_openai_error(detok({"model": "tiny", "tokens": "abc"}), 400, "tokens")
    big = detok({"model": "tiny", "tokens": [1] * (tiny_state.max_seq_len + 1)})
    assert assert_openai_error(big, 400, "tokens")["code"] == "context_length_exceeded"
    still_serves(tiny)


def test_seed_extremes_and_huge_top_k_are_served(tiny):
    # seeds at both ends of torch's range, n choices wrapping past 2^64 - 1, and a top_k past
    # the vocabulary (it overflowed int64 inside the engine loop and failed every stream)
    for extra in ({"seed": 2**64 - 1, "n": 2}, {"seed": -(2**63)}, {"top_k": 2**63}, {"top_k": 10**30}):
        r = httpx.post(tiny + "/v1/chat/completions", json={**OK, **extra}, timeout=60)
        assert r.status_code == 200, (extra, r.text)
    # -1 and 2^64 - 1 seed the same generator (torch takes seeds modulo 2^64)
    same = [httpx.post(tiny + "/v1/chat/completions", timeout=60, json={**OK, "seed": s, "max_tokens": 6, "temperature": 1.0,
                                                                         "ignore_eos": True}).json()["choices"][0]["message"]
            for s in (-1, 2**64 - 1)]
    assert same[0] == same[1]


def test_huge_top_k_does_not_fail_a_concurrent_stream(tiny):
    body = {**OK, "max_tokens": 40, "ignore_eos": True, "stream": True, "temperature": 1.0}
    finish, tokens = [], []
    with httpx.stream("POST", tiny + "/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}}, timeout=120) as s:
        lines = s.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert '"role":"assistant"' in first  # the stream is running
        attack = httpx.post(tiny + "/v1/chat/completions", json={**OK, "top_k": 2**63, "max_tokens": 8, "ignore_eos": True}, timeout=60)
        for line in lines:
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                finish += [c["finish_reason"] for c in chunk["choices"] if c.get("finish_reason")]
                if chunk.get("usage"):
                    tokens.append(chunk["usage"]["completion_tokens"])
    assert attack.status_code == 200 and attack.json()["usage"]["completion_tokens"] == 8
    assert finish == ["length"] and tokens == [40]


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_json_bodies_only(tiny):
    # a cross-origin page can send these without a CORS preflight; the server refuses them
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"content-type": ctype} if ctype else {}
        r = httpx.post(tiny + "/v1/chat/completions", content=json.dumps(OK), headers=headers, timeout=30)
        assert assert_openai_error(r, 415, None)["code"] == "unsupported_media_type", ctype
    r = httpx.post(tiny + "/v1/completions", content=b'{"model": "tiny", "prompt": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    ok = httpx.post(tiny + "/v1/chat/completions", content=json.dumps(OK), timeout=30,
                    headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


HOSTS = [  # (Host header, bind address, allowed names, answered?)
    ("127.0.0.1:8000", "127.0.0.1", (), True),
    ("localhost:8000", "127.0.0.1", (), True),
    ("LOCALHOST.", "127.0.0.1", (), True),
    ("app.localhost:8000", "127.0.0.1", (), True),
    ("[::1]:8000", "127.0.0.1", (), True),
    ("127.0.0.2", "127.0.0.1", (), True),
    ("", "127.0.0.1", (), True),  # HTTP/1.0, no Host: not a browser
    ("evil.example:8000", "127.0.0.1", (), False),  # DNS rebinding
    ("evil.example", "0.0.0.0", (), False),
    ("10.1.2.3:8000", "127.0.0.1", (), False),
    ("10.1.2.3:8000", "10.1.2.3", (), True),
    ("10.1.2.3:8000", "0.0.0.0", (), True),  # bound to every address: any address of this machine
    ("[fe80::1]:8000", "::", (), True),
    ("gpu-box:8000", "gpu-box", (), True),
    ("gpu-box.lab:8000", "0.0.0.0", ("gpu-box.lab",), True),
    ("a.lab.example", "0.0.0.0", ("*.lab.example",), True),
    ("lab.example.evil", "0.0.0.0", ("*.lab.example",), False),
    ("anything", "0.0.0.0", ("*",), True),
]


@pytest.mark.parametrize("host,bind,allowed,answered", HOSTS)
def test_host_allowed(host, bind, allowed, answered):
    assert host_allowed(host, bind, allowed) is answered


@pytest.mark.slow
def test_keyless_server_checks_host(tiny, tiny_state):
    evil = {"host": "evil.example"}
    for method, path in (("GET", "/health"), ("GET", "/"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        r = httpx.request(method, tiny + path, headers=evil, json=OK if method == "POST" else None, timeout=30)
        assert assert_openai_error(r, 400, None)["code"] == "invalid_host", path
    assert httpx.get(tiny + "/v1/models", headers={"host": "localhost"}).status_code == 200
    allowed = dataclasses.replace(tiny_state, allowed_hosts=("evil.example",))
    with BackgroundServer(allowed, own_engine=False) as url:
        assert httpx.get(url + "/v1/models", headers=evil).status_code == 200
    # with a key, a rebinding page has no key to send: names are not checked
    keyed = dataclasses.replace(tiny_state, api_key="k")
    with BackgroundServer(keyed, own_engine=False) as url:
        assert httpx.get(url + "/v1/models", headers={**evil, "authorization": "Bearer k"}).status_code == 200


@pytest.mark.slow
def test_every_route_but_health_needs_the_key(tiny_state):
    state = dataclasses.replace(tiny_state, api_key="s3cret")
    key = {"authorization": "Bearer s3cret"}
    routes = [("GET", "/openapi.json", None), ("GET", "/v1/models", None), ("GET", "/v1/models/tiny", None),
              ("GET", "/v1/opens1/molecule?smiles=CCO", None), ("POST", "/v1/chat/completions", OK),
              ("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1}),
              ("POST", "/tokenize", {"model": "tiny", "prompt": "x"}), ("POST", "/detokenize", {"model": "tiny", "tokens": [5]}),
              ("GET", "/metrics", None), ("GET", "/version", None)]
    with BackgroundServer(state, own_engine=False) as url:
        for method, path, body in routes:
            r = httpx.request(method, url + path, json=body, timeout=60)
            assert assert_openai_error(r, 401, None)["code"] == "invalid_api_key", path
            assert httpx.request(method, url + path, json=body, headers=key, timeout=60).status_code == 200, path
        assert httpx.get(url + "/health").status_code == 200
        assert "/v1/chat/completions" in httpx.get(url + "/openapi.json", headers=key).json()["paths"]
        # the page itself is static and holds nothing; it asks the user for the key
        assert httpx.get(url + "/").status_code == 200
