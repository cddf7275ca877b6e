"""Heavy page parsers: Tesseract OCR and a VLM behind an OpenAI-compatible endpoint.

Both read the page as pixels, rendered by pypdfium2 (BSD/Apache, PDFium), so they work
on scans and on pages whose text layer is garbled.

- OCR: the Debian `tesseract` binary (Apache-2.0) as a subprocess, PNG on stdin, text
  on stdout. A subprocess keeps a crash or a hang inside Tesseract out of our worker
  (there is a timeout) and needs no Python binding. Install:
  `apt-get install -y tesseract-ocr tesseract-ocr-chi-sim` (English + simplified
  Chinese; the scanned book in the test data is Chinese). Without --ocr-lang, Tesseract's
  script detector (OSD) picks the model per page. We read Tesseract's TSV output: its
  layout analysis gives the reading order (blocks, paragraphs, lines), line heights mark
  headings, and word confidences drop noise lines.
- VLM: `openai` client, page image as a base64 data URL plus a transcription prompt, as
  InternVL/Qwen-VL servers (vLLM, LMDeploy, SGLang) accept. This is the accurate, ~20x
  slower parser of the Intern-S1 pipeline; we only call it on routed pages.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import re
import shutil
import subprocess

_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")

VLM_PROMPT = (
    "Transcribe this document page into Markdown. Keep the reading order. Use # headings, "
    "Markdown pipe tables for tables and LaTeX ($...$ inline, $$...$$ display) for formulas. "
    "Leave out running headers, footers and page numbers. Reply with the Markdown only."
)


def render_png(pdf_path: str, index: int, dpi: int = 200) -> bytes:
    """Render page `index` (0-based) of a PDF to PNG bytes with pypdfium2."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf_path)
    try:
        image = doc[index].render(scale=dpi / 72.0, grayscale=True).to_pil()
    finally:
        doc.close()
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def tesseract_languages() -> tuple[str, ...]:
    """Installed Tesseract language models (empty if tesseract is not installed)."""
    exe = shutil.which("tesseract")
    if exe is None:
        return ()
    try:
        out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines()[1:] if line.strip())


def tesseract_available() -> bool:
    return bool(tesseract_languages())


def default_language() -> str:
    """Every installed model but `osd` (orientation only), English first."""
    langs = [x for x in tesseract_languages() if x != "osd"]
    langs.sort(key=lambda x: (x != "eng", x))
    return "+".join(langs) or "eng"


# Tesseract script names (from OSD) -> the language model to try first.
_SCRIPT_LANG = {"Han": "chi_sim", "HanS": "chi_sim", "HanT": "chi_tra", "Japanese": "jpn", "Hangul": "kor",
                "Cyrillic": "rus", "Arabic": "ara", "Greek": "ell", "Devanagari": "hin"}


def choose_language(png: bytes, dpi: int = 150) -> str:
    """Pick the OCR language for a page. The first model of a "a+b" list dominates, so
    "eng+chi_sim" reads Chinese headings as English gibberish: we ask Tesseract's script
    detector (OSD, ~1 s) and put the matching model first. Falls back to the default list."""
    langs = tesseract_languages()
    if "osd" not in langs:
        return default_language()
    try:
        proc = subprocess.run([shutil.which("tesseract") or "tesseract", "stdin", "stdout", "--psm", "0",
                               "--dpi", str(dpi)], input=png, capture_output=True, timeout=60,
                              env=dict(os.environ, OMP_THREAD_LIMIT="1"))
    except (OSError, subprocess.SubprocessError):
        return default_language()
    m = re.search(r"Script:\s*(\w+)", proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace"))
    first = _SCRIPT_LANG.get(m.group(1)) if m else None
    if m and m.group(1) == "Latin":
        first = "eng"
    if first not in langs:
        return default_language()
    # one model only: a second one (even eng) lets Tesseract misread CJK headings as Latin
    return first


def tidy_ocr_text(text: str) -> str:
    """Tesseract's text output -> Markdown paragraphs: lines of a paragraph are joined
    (no space between CJK characters, hyphenation undone), blank lines separate them,
    and the spaces Tesseract puts between CJK glyphs are removed."""
    paras = []
    for block in re.split(r"\n\s*\n", text.replace("\f", "\n")):
        out = ""
        for line in (re.sub(r" {2,}", " ", x.strip()) for x in block.splitlines()):
            if not line:
                continue
            if not out:
                out = line
            elif _CJK.match(out[-1]) or _CJK.match(line[0]):
                out += line
            elif re.search(r"[A-Za-z]-$", out) and re.match(r"[a-z]", line):
                out = out[:-1] + line
            else:
                out += " " + line
        out = re.sub(r"(?<=[\u3000-\u9fff\uff00-\uffef]) +(?=[\u3000-\u9fff\uff00-\uffef])", "", out)
        if out:
            paras.append(out)
    return "\n\n".join(strip_margin_lines(paras))


def strip_margin_lines(paras: list[str]) -> list[str]:
    """Drop page furniture OCR reads along with the body: among the first two and last two
    paragraphs, short ones (<= 30 chars) that start or end with a page number."""
    def furniture(p: str) -> bool:
        p = p.lstrip("#").strip()
        # (no \b: in "12第一篇" digits and CJK are both word characters)
        return len(p) <= 30 and bool(re.match(r"^\W*\d{1,4}(?!\d)", p) or re.search(r"(?<!\d)\d{1,4}\W*$", p))

    n = len(paras)
    return [p for i, p in enumerate(paras) if not ((i < 2 or i >= n - 2) and furniture(p))]


def ocr_png(png: bytes, lang: str | None = None, timeout: float = 120.0, dpi: int = 150) -> str:
    """OCR one PNG image with the tesseract binary; returns Markdown paragraphs.
    lang None = detect the script first (choose_language)."""
    exe = shutil.which("tesseract")
    if exe is None:
        raise RuntimeError("tesseract is not installed: apt-get install -y tesseract-ocr tesseract-ocr-chi-sim")
    lang = lang or choose_language(png, dpi)
    # OMP_THREAD_LIMIT=1: tesseract's OpenMP threads would fight our worker processes.
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    # TSV: every word with its box and Tesseract's block/paragraph/line numbers, so line
    # heights can mark headings (plain-text output has no sizes)
    proc = subprocess.run([exe, "stdin", "stdout", "-l", lang, "--psm", "3", "--dpi", str(dpi), "tsv"],
                          input=png, capture_output=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-300:]}")
    return tsv_to_markdown(proc.stdout.decode("utf-8", errors="replace"))


def tsv_to_markdown(tsv: str, heading_ratio: float = 1.3, min_conf: float = 40.0) -> str:
    """Tesseract TSV -> Markdown. Tesseract's own layout analysis gives the reading order
    (blocks, paragraphs, lines: it handles columns); a paragraph of at most two short
    lines whose height is `heading_ratio` times the page's median line height becomes a
    heading. Lines are joined as in tidy_ocr_text and page furniture is dropped."""
    lines: dict[tuple, list[tuple[int, str]]] = {}  # (block, par, line) -> [(left, word)]
    heights: dict[tuple, int] = {}
    confs: dict[tuple, list[float]] = {}
    for row in tsv.splitlines()[1:]:
        f = row.split("\t")
        if len(f) < 12:
            continue
        level, key = int(f[0]), (int(f[2]), int(f[3]), int(f[4]))
        if level == 4:
            heights[key] = int(f[9])
        elif level == 5 and f[11].strip():
            lines.setdefault(key, []).append((int(f[6]), f[11].strip()))
            confs.setdefault(key, []).append(float(f[10]))
    # a line Tesseract itself barely believes (mean confidence under min_conf) is noise:
    # specks, rules, a half-legible running header
    lines = {k: v for k, v in lines.items() if sum(confs[k]) / len(confs[k]) >= min_conf}
    if not lines:
        return ""
    body = sorted(heights.get(k, 0) for k in lines)[len(lines) // 2] or 1
    paras: dict[tuple, list[tuple]] = {}
    for key in sorted(lines):
        paras.setdefault(key[:2], []).append(key)
    out = []
    for keys in paras.values():
        text = "\n".join(_join_ocr_words(sorted(lines[k])) for k in keys)
        text = tidy_ocr_text(text)
        if not text:
            continue
        tall = sum(heights.get(k, 0) for k in keys) / len(keys) >= heading_ratio * body
        titled = len(keys) <= 2 and len(text) <= 60 and not re.search(r"[.。!?！？,，;；]$", text)
        out.append(f"## {text}" if tall and titled else text)
    return "\n\n".join(strip_margin_lines(out))


def _join_ocr_words(words: list[tuple[int, str]]) -> str:
    """Words of a line, left to right: no space next to a CJK character (Chinese puts
    none between characters or before punctuation), one space elsewhere."""
    out = ""
    for _, w in words:
        out += w if not out or _CJK.match(out[-1]) or _CJK.match(w[0]) else " " + w
    return out


def ocr_page(pdf_path: str, index: int, lang: str | None = None, dpi: int = 150) -> str:
    return ocr_png(render_png(pdf_path, index, dpi), lang, dpi=dpi)


def vlm_png(png: bytes, endpoint: str, model: str, *, prompt: str = VLM_PROMPT, timeout: float = 300.0,
            max_tokens: int = 4096) -> str:
    """Transcribe a page image with a VLM served behind an OpenAI-compatible API.
    The key comes from OPENAI_API_KEY (local servers accept any value)."""
    from openai import OpenAI

    client = OpenAI(base_url=endpoint, api_key=os.environ.get("OPENAI_API_KEY", "none"), timeout=timeout,
                    max_retries=1)
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    reply = client.chat.completions.create(
        model=model, temperature=0.0, max_tokens=max_tokens,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": prompt},
        ]}],
    )
    return clean_vlm_text(reply.choices[0].message.content or "")


def clean_vlm_text(text: str, max_repeats: int = 3) -> str:
    """Rule-based clean-up of a VLM transcription: unwrap a ```markdown fence, and cut
    the degenerate loops VLMs fall into (the same line over and over) to `max_repeats`."""
    m = re.fullmatch(r"\s*```(?:markdown|md)?\s*\n(.*?)\n```\s*", text, re.S)
    text = m.group(1) if m else text
    out: list[str] = []
    run = 0
    for line in text.strip().splitlines():
        run = run + 1 if out and line.strip() and line == out[-1] else 1
        if run <= max_repeats:
            out.append(line)
    return "\n".join(out).strip()
