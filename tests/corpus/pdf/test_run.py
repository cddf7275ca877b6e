"""parse-pdf end to end: layout to Markdown, bad input, resume, page dedup, workers.

Small PDFs are generated in-test with matplotlib's PDF backend (TrueType fonts, so they
carry a real text layer); the copyrighted papers are read from ../shared/data only."""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import pytest

from opens1.cli.data import parse_pdf as main
from opens1.corpus.pdf import layout
from opens1.corpus.pdf import parse as parse_module
from opens1.corpus.pdf.parse import ParseConfig, check_pdf
from opens1.corpus.pdf.run import run

LOREM = ("Stellar spectra reveal the chemical composition of distant stars and the motion of "
         "galaxies through the expanding universe while careful calibration removes instrument effects").split()


def make_pdf(path: Path, pages: list[list[tuple]], lines: list[list[tuple]] | None = None) -> Path:
    """Write a PDF: pages[i] = [(x, y, text, fontsize[, family]), ...] in figure fractions
    (y up); lines[i] = [(x0, y0, x1, y1), ...] ruling lines in figure fractions."""
    key = repr((pages, lines))
    path.write_bytes(_pdf_bytes(key))
    return path


@functools.lru_cache(maxsize=64)
def _pdf_bytes(key: str) -> bytes:
    """Rendering is the slow part of these tests: the same document is drawn once."""
    import ast
    import io

    pages, lines = ast.literal_eval(key)
    buf = io.BytesIO()
    _draw(buf, pages, lines)
    return buf.getvalue()


def _draw(path, pages: list[list[tuple]], lines: list[list[tuple]] | None) -> None:
    import matplotlib

    matplotlib.use("pdf")
    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType: extractable text
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.lines import Line2D

    with PdfPages(path) as pp:
        for i, items in enumerate(pages):
            fig = plt.figure(figsize=(8.5, 11))
            for x, y, text, size, *font in items:
                fig.text(x, y, text, fontsize=size, family=font[0] if font else None)
            for x0, y0, x1, y1 in (lines[i] if lines else []):
                fig.add_artist(Line2D([x0, x1], [y0, y1], color="black", linewidth=0.8))
            pp.savefig(fig)
            plt.close(fig)


def prose(seed: int, n_lines: int, x: float = 0.1, y: float = 0.8, width: int = 12, size: int = 10) -> list[tuple]:
    """n_lines of body text starting at (x, y), line pitch 1.2 em."""
    out = []
    for k in range(n_lines):
        words = [LOREM[(seed * 7 + k * width + j) % len(LOREM)] for j in range(width)]
        out.append((x, y - k * 0.0175 * size / 10, " ".join(words) + f" s{seed}l{k}", size))
    return out


def paper(tmp: Path, name: str = "paper.pdf", n_pages: int = 2) -> Path:
    pages = []
    for p in range(n_pages):
        items = [(0.1, 0.95, "Journal of Synthetic Tests", 8), (0.5, 0.04, str(p + 1), 9)]
        if p == 0:
            items.append((0.1, 0.88, "Parsing Stellar Documents", 20))
        items.append((0.1, 0.84, f"{p + 1}. Methods Section", 13))
        items += prose(p, 12, y=0.8)
        pages.append(items)
    return make_pdf(tmp / name, pages)


def parse(tmp: Path, pdfs: list[Path], **kw) -> tuple[dict, list[dict]]:
    out = tmp / "out"
    summary = run([str(p) for p in pdfs], ParseConfig(out=str(out), **kw), log=lambda s: None)
    recs = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    return summary, recs


def test_headings_running_lines_and_page_numbers(tmp_path):
    pdf = paper(tmp_path)
    summary, recs = parse(tmp_path, [pdf])
    text = (tmp_path / "out" / "paper.md").read_text()
    assert "# Parsing Stellar Documents" in text
    assert re.search(r"^#+ 1\. Methods Section$", text, re.M) and re.search(r"^#+ 2\. Methods Section$", text, re.M)
    assert "Journal of Synthetic Tests" not in text  # running header on every page
    assert not re.search(r"^\d+$", text, re.M)  # page numbers gone
    assert "s0l0" in text and "s1l11" in text  # body of both pages kept, in order
    assert text.index("s0l0") < text.index("s0l11") < text.index("s1l0")
    assert [r["page"] for r in recs] == [1, 2] and all(r["route"] == "cheap" and r["parser"] == "text" for r in recs)
    assert summary["routed_fraction"] == 0.0


def test_two_columns_read_left_then_right(tmp_path):
    items = [(0.1, 0.9, "A Two Column Page With A Spanning Title", 16)]
    items += prose(1, 20, x=0.08, y=0.85, width=4) + prose(2, 20, x=0.54, y=0.85, width=4)
    items += [(0.08, 0.1, "1 A footnote under the left column.", 7)]
    pdf = make_pdf(tmp_path / "cols.pdf", [items])
    parse(tmp_path, [pdf])
    text = (tmp_path / "out" / "cols.md").read_text()
    pos = [text.index(f"s{c}l{k}") for c in (1, 2) for k in range(20)]
    assert pos == sorted(pos), "left column must be read fully before the right one"
    assert text.index("Spanning Title") < pos[0]
    # the sentence running from the foot of the left column to the top of the right one
    # stays one paragraph, and the footnote is read after the body
    assert "\n" not in text[text.index("s1l19"):text.index("s2l0")]
    assert text.rstrip().endswith("1 A footnote under the left column.")


def test_ruled_table_becomes_pipe_table(tmp_path):
    rows = [("Model", "Params", "Score"), ("small", "10M", "0.51"), ("base", "110M", "0.73"), ("large", "340M", "0.81")]
    items, lines = [], []
    for i, row in enumerate(rows):
        y = 0.6 - i * 0.03
        items += [(0.15 + 0.2 * j, y + 0.008, cell, 10) for j, cell in enumerate(row)]
    for i in range(len(rows) + 1):  # full grid: every cell walled
        lines.append((0.12, 0.63 - i * 0.03, 0.72, 0.63 - i * 0.03))
    for j in range(4):
        lines.append((0.12 + 0.2 * j, 0.63, 0.12 + 0.2 * j, 0.63 - len(rows) * 0.03))
    items += prose(3, 5, y=0.8)
    pdf = make_pdf(tmp_path / "table.pdf", [items], [lines])
    parse(tmp_path, [pdf])
    text = (tmp_path / "out" / "table.md").read_text()
    assert "| Model | Params | Score |" in text
    assert "| base | 110M | 0.73 |" in text and "| large | 340M | 0.81 |" in text
    assert text.index("s3l0") < text.index("| Model")  # prose above the table comes first


def test_code_block_and_display_formula(tmp_path):
    items = prose(4, 4, y=0.8)
    items += [(0.12, 0.7, "def add(a, b):", 9, "monospace"), (0.12, 0.685, "    return a + b", 9, "monospace")]
    items += [(0.4, 0.62, "α² + β ≤ ∑ γ", 12)]
    items += prose(5, 4, y=0.55)
    pdf = make_pdf(tmp_path / "code.pdf", [items])
    parse(tmp_path, [pdf])
    text = (tmp_path / "out" / "code.md").read_text()
    assert "```\ndef add(a, b):\n    return a + b\n```" in text
    assert re.search(r"\$\$.*\\alpha.*\\leq.*\\sum.*\\gamma.*\$\$", text)


def minimal_pdf(body: bytes = b"BT /F1 24 Tf 72 700 Td (Hello) Tj ET", encrypt: bool = False) -> bytes:
    """A hand-written one-page PDF with a correct xref table; optionally with a Standard
    security handler whose password check fails for the empty password."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    if encrypt:
        objs.append(b"<< /Filter /Standard /V 1 /R 2 /O <" + b"ab" * 32 + b"> /U <" + b"cd" * 32 + b"> /P -4 >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    extra = b" /Encrypt 6 0 R /ID [<" + b"01" * 16 + b"> <" + b"01" * 16 + b">]" if encrypt else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R" % (len(objs) + 1) + extra + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return out


def test_minimal_pdf_parses(tmp_path):
    (tmp_path / "hello.pdf").write_bytes(minimal_pdf())
    assert check_pdf(str(tmp_path / "hello.pdf")) == 1


def test_bad_input_is_recorded_and_run_goes_on(tmp_path):
    """Every kind of bad input in one run: each gets an error record naming the file and
    the problem, and the good document between them is still parsed."""
    good = paper(tmp_path, "good.pdf", n_pages=1)
    bad = {
        "empty.pdf": (b"", "empty file"),
        "notpdf.pdf": (b"<html><body>not a pdf</body></html>", "not a PDF"),
        "truncated.pdf": (good.read_bytes()[:300], "PDF"),
        "encrypted.pdf": (minimal_pdf(encrypt=True), "encrypted"),
        "garbage.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 8, "PDF"),
    }
    paths = []
    for name, (data, _) in bad.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    missing = tmp_path / "missing.pdf"
    summary, recs = parse(tmp_path, paths[:2] + [good] + paths[2:] + [missing])
    errs = {Path(r["file"]).name: r for r in recs if r["route"] == "error"}
    assert set(errs) == set(bad) | {"missing.pdf"}
    for name, (_, msg) in bad.items():
        assert msg in errs[name]["error"] and name in errs[name]["error"], errs[name]
        assert errs[name]["page"] is None and errs[name]["doc"] == name[:-4]
    assert "no such file" in errs["missing.pdf"]["error"]
    assert (tmp_path / "out" / "good.md").is_file() and summary["documents"] == 1 and summary["errors"] == 6
    assert not (tmp_path / "out" / "empty.md").exists()


def test_cli_main(tmp_path, capsys):
    pdf = paper(tmp_path, n_pages=1)
    assert main([str(pdf), "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["pages"] == 1
    with pytest.raises(SystemExit):
        main([str(pdf), "--out", str(tmp_path / "o"), "--vlm-endpoint", "http://x"])  # model missing


def test_resume_skips_done_documents(tmp_path):
    a, b = paper(tmp_path, "a.pdf", 1), paper(tmp_path, "b.pdf", 1)
    out = tmp_path / "out"
    s1, _ = parse(tmp_path, [a, b])
    assert s1["skipped_done"] == 0 and s1["documents"] == 2
    md_a = (out / "a.md").read_text()
    (out / ".done" / "b.json").unlink()  # as if the run died after b.md, before b's marker
    s2, recs = parse(tmp_path, [a, b])
    assert s2["skipped_done"] == 1 and s2["documents"] == 2
    assert (out / "a.md").read_text() == md_a and len(recs) == 2
    (out / ".done" / "a.json").write_text("{truncated")  # a damaged marker: parse again
    s3, _ = parse(tmp_path, [a, b])
    assert s3["skipped_done"] == 1
    paper(tmp_path, "b.pdf", 2)  # b replaced by a longer document under the same name
    s4, recs = parse(tmp_path, [a, b])
    assert s4["skipped_done"] == 1 and len(recs) == 3
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []


def test_page_dedup_across_documents(tmp_path):
    licence = [(0.1, 0.9 - 0.02 * k, " ".join(LOREM[k % 5:]) + " all rights reserved", 10) for k in range(15)]
    a = make_pdf(tmp_path / "a.pdf", [prose(10, 12), licence])
    b = make_pdf(tmp_path / "b.pdf", [licence, prose(11, 12)])
    summary, recs = parse(tmp_path, [a, b])
    dup = [r for r in recs if r.get("dropped") == "duplicate"]
    assert [(r["doc"], r["page"], r["duplicate_of"]) for r in dup] == [("b", 1, "a#2")]
    assert "rights reserved" in (tmp_path / "out" / "a.md").read_text()
    assert "rights reserved" not in (tmp_path / "out" / "b.md").read_text()
    assert summary["dropped_duplicate"] == 1 and summary["chars_removed_fraction"] > 0


@pytest.mark.slow
def test_workers_match_serial(tmp_path):
    pdfs = [paper(tmp_path, f"d{i}.pdf", 1) for i in range(3)] + [tmp_path / "nope.pdf"]
    s1, r1 = parse(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, pdfs, workers=2)
    s2, r2 = parse(tmp_path / "y" if (tmp_path / "y").mkdir() is None else tmp_path, pdfs, workers=1)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in r1]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in r2]
    assert s1["documents"] == 3 and s1["errors"] == 1


def _sim(a: str, b: str) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    from pdf_parse import similarity

    return similarity(a, b)


def test_real_paper_page_against_ground_truth(shared_data, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
    from pdf_parse import headings, recovered, similarity, table_rows

    pdf = shared_data / "pdfs" / "arxiv_2305.03393v1_p9.pdf"
    parse(tmp_path, [pdf])
    ours = (tmp_path / "out" / "arxiv_2305.03393v1_p9.md").read_text()
    truth = pdf.with_suffix(".md").read_text()
    assert similarity(ours, truth) >= 0.9
    assert recovered(headings(truth), headings(ours)) >= len(headings(truth)) / 2
    assert recovered(table_rows(truth), table_rows(ours)) >= len(table_rows(truth)) / 2
    assert "Optimized Table Tokenization" not in ours  # the running header


def test_broken_page_is_recorded_and_the_rest_kept(tmp_path, monkeypatch):
    pdf = paper(tmp_path, n_pages=2)
    real = layout.extract_layout

    def flaky(page, number):
        if number == 2:
            raise RuntimeError("page 2 content stream is corrupt")
        return real(page, number)

    monkeypatch.setattr(layout, "extract_layout", flaky)
    _, recs = parse(tmp_path, [pdf])
    assert [r["route"] for r in recs] == ["cheap", "error"]
    assert recs[1]["page"] == 2 and "corrupt" in recs[1]["error"]
    text = (tmp_path / "out" / "paper.md").read_text()
    assert "s0l0" in text and "s1l0" not in text


def test_garbled_text_layer_is_routed(tmp_path):
    # glyph codes 1..31 in a simple font: a text layer of control characters
    junk = b"(" + bytes(range(1, 32)).replace(b"(", b"").replace(b")", b"").replace(b"\\", b"") * 3 + b")"
    body = b"BT /F1 12 Tf 72 700 Td " + junk + b" Tj 0 -20 Td (readable words here) Tj ET"
    (tmp_path / "junk.pdf").write_bytes(minimal_pdf(body))
    _, (rec,) = parse(tmp_path, [tmp_path / "junk.pdf"], ocr=False)
    assert rec["scores"]["garble_ratio"] > 0.5
    assert (rec["route"], rec["reason"]) == ("heavy", "garbled")
    # glyphs without text are cleaned out of the cheap path's output; the rest is kept
    text = (tmp_path / "out" / "junk.md").read_text()
    assert text.strip() == "readable words here" and "dropped" not in rec


def test_still_garbled_page_is_dropped_with_a_record(tmp_path):
    # UTF-8 bytes shown through WinAnsi: "cafÃ©" mojibake, which no clean-up can undo
    body = b"BT /F1 12 Tf 72 700 Td (" + b"caf\xc3\xa9 na\xc3\xafve " * 12 + b") Tj ET"
    (tmp_path / "moji.pdf").write_bytes(minimal_pdf(body))
    summary, (rec,) = parse(tmp_path, [tmp_path / "moji.pdf"], ocr=False)
    assert rec["reason"] == "garbled" and rec["dropped"] == "garbled" and rec["final_garble"] > 0.2
    assert (tmp_path / "out" / "moji.md").read_text().strip() == ""
    assert summary["dropped_garbled"] == 1 and summary["chars_removed_fraction"] == 1.0


def test_document_timeout_is_an_error_record(tmp_path, monkeypatch):
    import time


    slow, fast = paper(tmp_path, "slow.pdf", 1), paper(tmp_path, "fast.pdf", 1)
    real = parse_module.parse_document

    def parse_document(path, stem, cfg):
        if stem == "slow":
            time.sleep(5)  # a file that keeps the parser busy
        return real(path, stem, cfg)

    monkeypatch.setattr(parse_module, "parse_document", parse_document)
    summary, recs = parse(tmp_path, [slow, fast], doc_timeout=0.5)
    (err,) = [r for r in recs if r["route"] == "error"]
    assert err["doc"] == "slow" and "DocumentTimeout" in err["error"]
    assert summary["documents"] == 1 and (tmp_path / "out" / "fast.md").is_file()
