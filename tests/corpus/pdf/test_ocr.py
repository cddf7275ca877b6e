"""OCR: text tidying, page rendering, and scans (no text layer) routed through tesseract."""

from __future__ import annotations

import re

import pytest
from tests.corpus.pdf.test_run import make_pdf, parse

from opens1.corpus.pdf import ocr

needs_tesseract = pytest.mark.skipif(not ocr.tesseract_available(),
                                     reason="tesseract not installed (apt-get install -y tesseract-ocr)")


def test_tidy_joins_lines_and_drops_page_furniture():
    raw = ("12  Chapter One\n\nThe first line of a para-\ngraph goes on\nhere.\n\n商品 的\n使用价值\n\n"
           "Next paragraph.\n\n- 13 -\n\f")
    want = "The first line of a paragraph goes on here.\n\n商品的使用价值\n\nNext paragraph."
    assert ocr.tidy_ocr_text(raw) == want
    assert ocr.tidy_ocr_text("") == ""


def _tsv(rows):
    """Tesseract TSV from (block, par, line, height, [(left, conf, word), ...]) rows."""
    out = ["level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"]
    for b, p, ln, h, words in rows:
        out.append(f"4\t1\t{b}\t{p}\t{ln}\t0\t0\t0\t100\t{h}\t-1\t")
        out += [f"5\t1\t{b}\t{p}\t{ln}\t{i}\t{x}\t0\t10\t{h}\t{c}\t{w}" for i, (x, c, w) in enumerate(words, 1)]
    return "\n".join(out) + "\n"


def test_tsv_to_markdown():
    tsv = _tsv([
        (1, 1, 1, 60, [(0, 95, "Results"), (90, 93, "Overview")]),  # tall: a heading
        (2, 1, 1, 30, [(0, 96, "Body"), (50, 90, "text")]),
        (2, 1, 2, 30, [(0, 91, "goes"), (50, 92, "on.")]),
        (3, 1, 1, 30, [(0, 12, "~~"), (20, 8, "#%")]),  # low confidence: specks
        (4, 1, 1, 30, [(20, 90, "商品"), (0, 90, "交换"), (40, 88, ","), (60, 90, "价值")]),
    ])
    assert ocr.tsv_to_markdown(tsv) == "## Results Overview\n\nBody text goes on.\n\n交换商品,价值"
    assert ocr.tsv_to_markdown("level\n") == ""


def test_clean_vlm_text():
    assert ocr.clean_vlm_text("```markdown\n# Title\n\nBody\n```") == "# Title\n\nBody"
    looped = "Intro\n" + "the the the\n" * 50 + "End"
    assert ocr.clean_vlm_text(looped) == "Intro\n" + "the the the\n" * 3 + "End"
    assert ocr.clean_vlm_text("a\n\n\n\nb") == "a\n\n\n\nb"  # blank lines are not a loop


def test_render_png(tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", [[(0.1, 0.5, "Rendered", 30)]])
    png = ocr.render_png(str(pdf), 0, dpi=72)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(png)).size == (612, 792)  # letter at 72 dpi


def scanned_pdf(tmp_path, lines: list[str]):
    """A scan: render a text PDF to pixels and save the image alone as a PDF (no text layer)."""
    from io import BytesIO

    from PIL import Image

    src = make_pdf(tmp_path / "src.pdf", [[(0.1, 0.85 - 0.05 * k, t, 16) for k, t in enumerate(lines)]])
    img = Image.open(BytesIO(ocr.render_png(str(src), 0, dpi=150))).convert("L")
    out = tmp_path / "scan.pdf"
    img.save(out, "PDF", resolution=150.0)
    src.unlink()
    return out


@needs_tesseract
@pytest.mark.slow
def test_scan_is_routed_to_ocr_and_yields_text(tmp_path):
    lines = ["Optical character recognition", "reads pixels when a page", "has no text layer at all."]
    scan = scanned_pdf(tmp_path, lines)
    summary, (rec,) = parse(tmp_path, [scan])
    assert rec["scores"]["n_chars"] == 0 and not rec["scores"]["text_layer"]
    assert (rec["route"], rec["reason"], rec["parser"]) == ("heavy", "no-text-layer", "tesseract")
    text = (tmp_path / "out" / "scan.md").read_text().lower()
    got = set(re.findall(r"[a-z]+", text))
    want = set(re.findall(r"[a-z]+", " ".join(lines).lower()))
    assert len(got & want) >= 0.8 * len(want)
    assert summary["by_parser"] == {"tesseract": 1}


def test_no_ocr_records_the_scan_instead_of_dropping_it(tmp_path):
    from PIL import Image

    img = Image.new("L", (300, 400), 255)
    img.paste(0, (50, 50, 250, 80))  # some ink, no text layer
    img.save(tmp_path / "scan.pdf", "PDF", resolution=50.0)
    _, (rec,) = parse(tmp_path, [tmp_path / "scan.pdf"], ocr=False, images=True)
    assert rec["route"] == "heavy" and rec["parser"] == "text"
    # the page survives as what the cheap path can see: a reference to its image,
    # written beside the Markdown with --images
    assert (tmp_path / "out" / "scan.md").read_text().strip() == "![Figure 1.1](scan_p1_fig1.png)"
    fig = Image.open(tmp_path / "out" / "scan_p1_fig1.png")
    assert rec["images"] == 1 and fig.size[0] > 100 and fig.convert("L").getextrema()[0] == 0  # the ink


@needs_tesseract
@pytest.mark.slow
def test_real_scanned_book_page(shared_data):
    text = ocr.ocr_page(str(shared_data / "pdfs" / "mineru_scanned_book.pdf"), 1)
    han = re.findall(r"[\u4e00-\u9fff]", text)
    assert len(han) > 300  # a full page of Chinese
    assert "商品" in text  # the book is about commodities (商品)


def test_missing_tesseract_warns_once_and_counts_an_error(tmp_path, monkeypatch):
    """Without tesseract a scan is not silently turned into image links: one warning, and an
    error record per document that the summary's "errors" counts."""
    import json

    from PIL import Image

    from opens1.corpus.pdf.parse import ParseConfig
    from opens1.corpus.pdf.run import run

    monkeypatch.setattr(ocr, "tesseract_available", lambda: False)
    for name in ("scan_a", "scan_b"):
        img = Image.new("L", (300, 400), 255)
        img.paste(0, (50, 50, 250, 80))
        img.save(tmp_path / f"{name}.pdf", "PDF", resolution=50.0)
    pdfs = [str(tmp_path / "scan_a.pdf"), str(tmp_path / "scan_b.pdf")]
    logs: list[str] = []
    summary = run(pdfs, ParseConfig(out=str(tmp_path / "out")), log=logs.append)
    assert summary["documents"] == 2 and summary["errors"] == 2
    warnings = [line for line in logs if line.startswith("warning")]
    assert len(warnings) == 1 and "tesseract is not installed" in warnings[0]
    recs = [json.loads(line) for line in (tmp_path / "out" / "pages.jsonl").read_text().splitlines()]
    errs = [r for r in recs if r["route"] == "error"]
    assert [e["doc"] for e in errs] == ["scan_a", "scan_b"] and all("1 page(s)" in e["error"] for e in errs)
    # --no-ocr says "I know": no error, no warning
    logs.clear()
    summary = run(pdfs, ParseConfig(out=str(tmp_path / "out2"), ocr=False), log=logs.append)
    assert summary["errors"] == 0 and not [line for line in logs if line.startswith("warning")]
