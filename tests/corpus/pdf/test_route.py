"""Page scores, routing decisions, and the VLM route against a fake OpenAI server."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pdfplumber
import pytest
from tests.corpus.pdf.test_run import make_pdf, parse, prose

from opens1.corpus.pdf.route import PageScores, RouterConfig, garble_ratio, route, score_page


def test_garble_ratio():
    assert garble_ratio("plain English text, with punctuation (and numbers 1-2).") == 0.0
    assert garble_ratio("") == 0.0
    assert garble_ratio("(cid:12)(cid:13)(cid:14)ab") == pytest.approx(24 / 26)
    assert garble_ratio("ab\ufffd\ufffd") == 0.5
    assert garble_ratio("\ue000\ue001xy") == 0.5  # private-use glyphs
    assert garble_ratio("caf\u00c3\u00a9 na\u00c3\u00afve") > 0.2  # UTF-8 read as Latin-1


def scores(**kw) -> PageScores:
    base = dict(n_chars=2000, text_layer=True, image_coverage=0.0, formula_density=0.0, symbol_density=0.0,
                garble_ratio=0.0)
    return PageScores(**{**base, **kw})


def test_route_decisions():
    cfg, vlm = RouterConfig(), RouterConfig(vlm=True)
    assert route(scores(), cfg) == route(scores(), vlm)
    assert route(scores(), cfg).parser == "text" and not route(scores(), cfg).heavy
    scan = scores(n_chars=0, text_layer=False, image_coverage=0.9)
    assert (route(scan, cfg).parser, route(scan, cfg).reason) == ("ocr", "no-text-layer")
    assert route(scan, vlm).parser == "vlm"
    assert route(scan, RouterConfig(ocr=False)).parser == "text"  # nothing better available
    blank = scores(n_chars=0, text_layer=False)
    assert route(blank, cfg).parser == "blank" and not route(blank, cfg).heavy
    outlines = scores(n_chars=0, text_layer=False, n_vectors=400)  # text converted to curves
    assert route(outlines, cfg).parser == "ocr"
    stamped = scores(n_chars=80, image_coverage=0.95)  # scan + "Downloaded from" line
    assert (route(stamped, cfg).parser, route(stamped, cfg).reason) == ("ocr", "scanned")
    assert route(scores(n_chars=3000, image_coverage=0.95), cfg).parser == "text"  # text over a background
    maths = scores(formula_density=0.2)
    assert route(maths, cfg).heavy and route(maths, cfg).parser == "text"  # OCR would lose the maths
    assert route(maths, vlm).parser == "vlm" and route(maths, vlm).reason == "formula"
    assert route(scores(garble_ratio=0.3), cfg).parser == "ocr"
    assert route(scores(symbol_density=0.3), vlm).reason == "symbols"
    assert not route(maths, RouterConfig(formula_threshold=0.5)).heavy


def formula_page(tmp_path, name="maths.pdf"):
    items = prose(1, 3, y=0.9)
    maths = "∑ α{} ≤ ∫ β γ ∂ δ / ∇ θ ≈ λ ∈ Ω ⊂ Φ"
    items += [(0.2, 0.8 - 0.04 * k, maths.format(k), 12) for k in range(12)]
    return make_pdf(tmp_path / name, [items])


def test_scores_from_real_glyphs(tmp_path):
    maths = formula_page(tmp_path)
    plain = make_pdf(tmp_path / "plain.pdf", [prose(2, 20)])
    with pdfplumber.open(maths) as m, pdfplumber.open(plain) as p:
        sm, sp = score_page(m.pages[0]), score_page(p.pages[0])
    assert sm.text_layer and sp.text_layer and sp.n_chars > 500
    assert sm.formula_density > RouterConfig.formula_threshold > sp.formula_density
    assert sm.symbol_density > sp.symbol_density and sp.garble_ratio == 0.0


class FakeVLM(BaseHTTPRequestHandler):
    """The slice of the OpenAI chat-completions API a VLM server speaks."""

    requests: list[dict] = []
    fail = False

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLM.requests.append({"path": self.path, "body": body})
        if FakeVLM.fail:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "model crashed"}}')
            return
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                     "role": "assistant", "content": "```markdown\n# Transcribed\n\n$$\\sum_i \\alpha_i$$\n```"}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def vlm_server():
    FakeVLM.requests, FakeVLM.fail = [], False
    server = HTTPServer(("127.0.0.1", 0), FakeVLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_vlm_route_with_fake_server(tmp_path, vlm_server):
    maths = formula_page(tmp_path)
    plain = make_pdf(tmp_path / "plain.pdf", [prose(2, 20)])
    summary, recs = parse(tmp_path, [maths, plain], vlm_endpoint=vlm_server, vlm_model="fake-vl")
    by_doc = {r["doc"]: r for r in recs}
    assert by_doc["maths"]["parser"] == "vlm:fake-vl" and by_doc["maths"]["reason"] == "formula"
    assert by_doc["plain"]["parser"] == "text" and by_doc["plain"]["route"] == "cheap"
    assert by_doc["maths"]["seconds"]["heavy"] > 0
    assert summary["routed_fraction"] == 0.5
    assert (tmp_path / "out" / "maths.md").read_text() == "# Transcribed\n\n$$\\sum_i \\alpha_i$$\n"
    (req,) = FakeVLM.requests  # only the routed page went to the VLM
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "fake-vl"
    content = req["body"]["messages"][0]["content"]
    url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(c["type"] == "text" and "Markdown" in c["text"] for c in content)


def test_vlm_failure_falls_back_to_text(tmp_path, vlm_server):
    FakeVLM.fail = True
    maths = formula_page(tmp_path)
    _, (rec,) = parse(tmp_path, [maths], vlm_endpoint=vlm_server, vlm_model="fake-vl")
    assert rec["route"] == "heavy" and rec["parser"] == "text" and "heavy_error" in rec
    assert "α" in (tmp_path / "out" / "maths.md").read_text() or "alpha" in (tmp_path / "out" / "maths.md").read_text()
