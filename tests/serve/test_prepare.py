"""Every request is budgeted before expensive work, and the expensive work runs off the
event loop: the attacks of issue #17 at small scale, each shown to hold.

- a prompt over the character budget is refused before the tokenizer sees it;
- /health and other requests are served while a heavy prompt is being tokenized, in a
  worker thread (tokenizer patched to block) and in a worker process (a tokenizer that
  blocks on a file), and while six 1000-atom molecules are drawn;
- images: pixels are read from the headers, a request of many just-under-the-limit PNGs
  is refused before any is decoded (the server grows < 200 MB; it grew 1.85 GB), and
  the images' tokens are checked against the context from the headers;
- time series: length x channels is capped per request, before any array is built.
"""

import base64
import dataclasses
import io
import os
import threading
import time

import httpx
import pytest
from PIL import Image

from opens1.processing.processor import Processor
from opens1.serve.server import BackgroundServer
from tests.serve.gated import GatedTokenizer

pytestmark = pytest.mark.timeout(180)

OK = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def chat(url, body, timeout=120):
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)


def user(*parts):
    return {**OK, "messages": [{"role": "user", "content": list(parts)}]}


def png_url(size, mode="1") -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")  # a blank bilevel image compresses to almost nothing
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def series(values, rate=360):
    return {"type": "time_series", "time_series": {"values": values, "sampling_rate": rate}}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def patch_encoders(monkeypatch, tok, before):
    """Call before(texts) ahead of each of the tokenizer's ways in: one text, a batch, or the
    chat renderer's (text, mode) pieces."""
    def wrap(name, texts_of):
        original = getattr(tok, name)
        monkeypatch.setattr(tok, name, lambda arg, **kw: before(texts_of(arg)) or original(arg, **kw))

    wrap("encode", lambda text: [text])
    wrap("encode_batch", list)
    wrap("encode_pieces", lambda pieces: [text for text, _ in pieces])


@pytest.fixture
def threaded(tiny_state):
    """The tiny server with its CPU work in threads of this process (what it measures is
    this process, and a patched tokenizer is the one the work uses)."""
    state = dataclasses.replace(tiny_state, cpu_workers=0, max_body_bytes=32 * 2**20)
    with BackgroundServer(state, own_engine=False) as url:
        yield url, state


def test_character_budget_before_tokenizing(threaded, monkeypatch):
    url, state = threaded
    calls = []
    patch_encoders(monkeypatch, state.tokenizer, lambda texts: calls.append(len(texts)))
    limit = state.prompt_char_limit
    assert limit == state.max_seq_len * 16
    r = chat(url, {**OK, "messages": [{"role": "user", "content": "[C@@H]" * (limit // 6 + 1)}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "characters" in err["message"]
    assert calls == []  # the tokenizer never saw it
    # completions: the same budget per prompt
    r = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "x" * (limit + 1)}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert calls == []
    assert chat(url, OK).status_code == 200 and calls  # a normal prompt is tokenized as before


def test_health_and_others_served_while_a_prompt_is_tokenized(threaded, monkeypatch):
    url, state = threaded
    entered, release = threading.Event(), threading.Event()

    def gate(texts):
        if any("HEAVY" in t for t in texts):
            entered.set()
            release.wait(60)

    patch_encoders(monkeypatch, state.tokenizer, gate)
    heavy = {}
    t = threading.Thread(target=lambda: heavy.setdefault("r", chat(url, {**OK, "messages": [{"role": "user", "content": "HEAVY"}]})))
    t.start()
    try:
        assert entered.wait(60)
        assert httpx.get(url + "/health", timeout=30).json()["status"] == "ok"
        assert chat(url, OK).status_code == 200  # another client's request goes through meanwhile
        assert "r" not in heavy  # ... while the heavy one is still being tokenized
    finally:
        release.set()
        t.join(60)
    assert heavy["r"].status_code == 200


@pytest.mark.slow
def test_tokenizing_runs_in_a_worker_process(tiny_state, tmp_path):
    # the tokenizer blocks until a file appears; it is pickled into the worker processes,
    # so this shows the work is done there: the server process answers meanwhile
    gated = GatedTokenizer(tiny_state.tokenizer, str(tmp_path))
    state = dataclasses.replace(tiny_state, processor=Processor(gated, tiny_state.processor.config), cpu_workers=2)
    with BackgroundServer(state, own_engine=False) as url:
        heavy = {}
        t = threading.Thread(target=lambda: heavy.setdefault("r", chat(url, {**OK, "messages": [{"role": "user", "content": "HEAVY"}]})))
        t.start()
        try:
            deadline = time.time() + 90  # the first job also waits for the worker to start
            while not (tmp_path / "entered").exists() and time.time() < deadline:
                time.sleep(0.05)
            assert (tmp_path / "entered").exists()
            assert os.getpid() != int((tmp_path / "entered").read_text())  # another process
            assert httpx.get(url + "/health", timeout=30).json()["status"] == "ok"
            assert chat(url, OK).status_code == 200  # the second worker serves others
            assert "r" not in heavy
        finally:
            (tmp_path / "release").touch()
            t.join(90)
        assert heavy["r"].status_code == 200


@pytest.mark.slow
def test_health_answers_while_molecules_are_drawn(tiny):
    # six 1000-atom molecules (about a second of RDKit each, holding the GIL) in the molecule worker
    smiles = "C" * 1000
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        httpx.get(tiny + "/v1/opens1/molecule", params={"smiles": smiles}, timeout=120))) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)  # let the requests reach the worker
        health = httpx.get(tiny + "/health", timeout=30)
        drawn_by_then = len(results)
    finally:
        for t in threads:
            t.join(120)
    assert health.json()["status"] == "ok"
    assert drawn_by_then < 6  # /health did not wait for the drawings
    assert [r.status_code for r in results] == [200] * 6


def test_png_attack_refused_before_decoding(threaded):
    url, state = threaded
    # 14 blank PNGs just under the per-image limit: ~0.5 MB of request, 1.7 GB as RGB
    side = int(state.max_image_pixels**0.5) - 1
    body = user(*[image(png_url((side, side))) for _ in range(14)], {"type": "text", "text": "?"})
    assert len(httpx.Request("POST", url, json=body).content) < 2_000_000
    before = rss_bytes()
    r = chat(url, body)
    grown = rss_bytes() - before
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "image_too_large" and "per request" in err["message"]
    assert err["param"] == "messages.0.content.1.image_url.url"  # refused at the second image's header
    assert grown < 200 * 2**20, f"the server grew {grown / 2**20:.0f} MB"


def test_image_limits_from_headers(threaded):
    url, state = threaded
    # one image over the per-image limit
    r = chat(url, user(image(png_url((8000, 6000)))))
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_too_large"
    assert "per image" in r.json()["error"]["message"]
    # images whose tokens alone exceed the context (tiny: 384 tokens; a 4-tile image is 82)
    r = chat(url, user(*[image(png_url((400, 400), "RGB")) for _ in range(5)]))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    # a header that parses but pixels that do not: caught when decoding, in the worker
    raw = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(raw, "PNG")
    truncated = "data:image/png;base64," + base64.b64encode(raw.getvalue()[:60]).decode()
    r = chat(url, user(image(truncated)))
    assert r.status_code == 400, r.text
    assert chat(url, user(image(png_url((40, 30), "RGB")), {"type": "text", "text": "ok?"})).status_code == 200


def test_series_values_budget(threaded):
    url, state = threaded
    assert state.max_series_values == 1_000_000
    too_many = [[0.5] * 1000] * 1001  # 1.001 M values: few tokens, but the tower's work is values
    r = chat(url, user(series(too_many)))
    assert r.status_code == 400 and r.json()["error"]["code"] == "series_too_large"
    # the budget is per request: two series under it each, over it together
    half = [[0.5] * 1000] * 600
    r = chat(url, user(series(half), series(half)))
    assert r.status_code == 400 and r.json()["error"]["code"] == "series_too_large"
    # a small server budget applies to the parsed values too (channels-first data counted the same)
    small = dataclasses.replace(state, max_series_values=1000)
    with BackgroundServer(small, own_engine=False) as url2:
        r = chat(url2, user(series([[0.1 * i for i in range(720)]] * 2)))
        assert r.status_code == 400 and r.json()["error"]["code"] == "series_too_large"
        assert chat(url2, user(series([0.1 * i for i in range(720)]))).status_code == 200


def test_sizes_checked_before_validation(threaded):
    url, state = threaded
    cases = {
        "messages": {**OK, "messages": [{"role": "user"}] * (state.max_seq_len // 4 + 1)},
        "tools": {**OK, "tools": [{"type": "function", "function": {"name": "f"}}] * (state.max_seq_len // 4 + 1)},
        "prompt": {"model": "tiny", "prompt": ["a"] * 65},
        "stop": {**OK, "stop": ["x"] * 1000},
    }
    for param, body in cases.items():
        route = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        r = httpx.post(url + route, json=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (param, r.text)
    parts = [{"type": "text", "text": ""}] * (state.max_seq_len + 1)
    r = chat(url, user(*parts))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
