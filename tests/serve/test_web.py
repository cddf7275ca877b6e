"""The web UI: static files with no external assets, the RDKit molecule endpoint, and
(slow, needs Debian's `chromium`) a headless browser that sends a message with a
SMILES, waits for the streamed answer, checks the page and takes a screenshot."""

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

# a hung server or engine must fail the test, not stall the suite
pytestmark = pytest.mark.timeout(120)

WEB = Path(__file__).resolve().parents[2] / "src" / "opens1" / "serve" / "web"


def test_page_and_assets_are_served(tiny):
    page = httpx.get(tiny + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/web/app.js">' in page.text
    js = httpx.get(tiny + "/web/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "/v1/chat/completions" in js.text and "reasoning_content" in js.text
    assert httpx.get(tiny + "/web/style.css").headers["content-type"].startswith("text/css")


def test_no_external_assets():
    # no CDN, no remote fonts: the page works on an offline machine
    for f in WEB.iterdir():
        assert not re.search(r"https?://", f.read_text()), f.name


def test_molecule_endpoint(tiny):
    r = httpx.get(tiny + "/v1/opens1/molecule", params={"smiles": "CC(=O)Oc1ccccc1C(=O)O"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.lstrip().startswith("<?xml") and "<svg" in r.text
    for bad in ("C1CC(", "", "x" * 5000):
        err = httpx.get(tiny + "/v1/opens1/molecule", params={"smiles": bad})
        assert err.status_code == 400 and err.json()["error"]["param"] == "smiles"


class PipeCDP:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fd 3 in, fd 4 out,
    NUL-terminated JSON): no websocket library needed."""

    def __init__(self, chromium: str):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--window-size=1200,800", "about:blank"],
            # fds 3 and 4 are what preexec_fn made them; pass_fds keeps them open in the child
            preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    def close(self):
        self.proc.kill()
        self.proc.wait(10)
        os.close(self._w)
        os.close(self._r)


@pytest.mark.slow
def test_browser_chat_streams_and_draws_molecules(tiny, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    cdp = PipeCDP(chromium)
    try:
        target = cdp.call("Target.createTarget", url=tiny + "/?q=What%20is%20this%3F&smiles=CC(%3DO)Oc1ccccc1C(%3DO)O&max_tokens=24")
        session = cdp.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]

        def js(expr):
            return cdp.call("Runtime.evaluate", session, expression=expr, returnByValue=True)["result"].get("value")

        deadline = time.time() + 60
        while time.time() < deadline and "tokens in" not in (js("document.getElementById('status').textContent") or ""):
            time.sleep(0.2)
        status = js("document.getElementById('status').textContent")
        assert re.match(r"24 tokens in [\d.]+ s \(length\)", status), status
        # the streamed answer: thinking is on, so the cut-off thought is in the collapsed reasoning
        assert js("document.querySelector('.msg.assistant details.reasoning').open") is False
        assert len(js("document.querySelector('.msg.assistant details.reasoning div').textContent")) > 0
        assert js("document.getElementById('model').textContent").startswith("model: tiny")
        # the SMILES was drawn by the server (an SVG loaded as an image)
        assert js("document.querySelector('.msg.user .molecule img').src").startswith("blob:")
        assert js("document.querySelector('.msg.user .molecule img').naturalWidth") > 0
        shot = cdp.call("Page.captureScreenshot", session, format="png")["data"]
        png = tmp_path / "opens1-chat.png"
        png.write_bytes(base64.b64decode(shot))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    finally:
        cdp.close()
