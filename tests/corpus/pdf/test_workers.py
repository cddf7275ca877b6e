"""parse-pdf under hostile input: a document that keeps the parser busy is abandoned at
--doc-timeout, a worker that dies (as by the OOM killer) or runs past --doc-memory costs
its own document only, and the rest of the batch parses."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from opens1.cli.data import parse_pdf as main
from opens1.corpus.pdf import parse
from opens1.corpus.pdf.parse import ParseConfig
from opens1.corpus.pdf.run import run

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from attacks import grid_pdf, text_pdf  # noqa: E402


def _batch(tmp: Path, names: list[str], slow: str | None = None) -> list[Path]:
    paths = []
    for name in names:
        p = tmp / f"{name}.pdf"
        p.write_bytes(grid_pdf(200) if name == slow else text_pdf(f"words of the document named {name}"))
        paths.append(p)
    return paths


def _parse(tmp: Path, pdfs: list[Path], **kw) -> tuple[dict, list[dict]]:
    out = tmp / "out"
    summary = run([str(p) for p in pdfs], ParseConfig(out=str(out), ocr=False, **kw), log=lambda s: None)
    return summary, [json.loads(x) for x in (out / "pages.jsonl").read_text().splitlines()]


def _errors(recs: list[dict]) -> dict[str, str]:
    return {r["doc"]: r["error"] for r in recs if r["route"] == "error"}


def test_slow_pdf_is_abandoned_at_the_timeout_and_the_batch_goes_on(tmp_path):
    """200 x 200 ruling lines keep pdfplumber's table finder busy for minutes (whose own
    `except Exception` swallowed the old in-process alarm); the parent kills the worker."""
    pdfs = _batch(tmp_path, ["a", "grid", "b", "c"], slow="grid")
    summary, recs = _parse(tmp_path, pdfs, doc_timeout=2, workers=2)
    assert _errors(recs).keys() == {"grid"} and "DocumentTimeout" in _errors(recs)["grid"]
    assert summary["documents"] == 3 and summary["errors"] == 1
    for name in "abc":
        assert f"document named {name}" in (tmp_path / "out" / f"{name}.md").read_text()
    assert not (tmp_path / "out" / "grid.md").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_killed_mid_document_fails_that_document_only(tmp_path, monkeypatch, workers):
    real = parse.parse_document

    def parse_document(path, stem, cfg):
        if stem == "victim":
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return real(path, stem, cfg)

    monkeypatch.setattr(parse, "parse_document", parse_document)
    pdfs = _batch(tmp_path, ["a", "victim", "b", "c", "d"])
    summary, recs = _parse(tmp_path, pdfs, workers=workers)
    errors = _errors(recs)
    assert errors.keys() == {"victim"} and "worker died (killed by SIGKILL)" in errors["victim"]
    assert summary["documents"] == 4  # the dead worker was replaced: the documents after it parsed
    assert [r["doc"] for r in recs] == ["a", "b", "c", "d", "victim"]  # input order, the error last


def test_document_past_the_memory_cap_is_an_error_record(tmp_path, monkeypatch):
    real = parse.parse_document

    def parse_document(path, stem, cfg):
        if stem == "hog":
            bytearray(1 << 30)  # a 1 GiB allocation, over a 256 MiB cap
        return real(path, stem, cfg)

    monkeypatch.setattr(parse, "parse_document", parse_document)
    pdfs = _batch(tmp_path, ["hog", "a", "b"])
    summary, recs = _parse(tmp_path, pdfs, doc_memory_mb=256)
    errors = _errors(recs)
    assert errors.keys() == {"hog"} and "MemoryError" in errors["hog"] and "--doc-memory 256" in errors["hog"]
    assert summary["documents"] == 2


def test_memory_cap_and_timeout_flags_parse(tmp_path):
    pdf = _batch(tmp_path, ["a"])[0]
    assert main([str(pdf), "--out", str(tmp_path / "o"), "--doc-timeout", "60", "--doc-memory", "1024",
                 "--no-ocr"]) == 0
    assert (tmp_path / "o" / "a.md").is_file()


def test_bench_attacks_command_lines_parse(capsys):
    """docs/data-pipeline.md and docs/sandbox.md run `python bench/attacks.py --only pdf|sandbox`."""
    import attacks

    assert attacks.main(["--only", "no-such-row", "--quick"]) == 0
    assert "ref/ours" in capsys.readouterr().out
    assert any(n.startswith("pdf") for n in attacks.ROWS) and any(n.startswith("sandbox") for n in attacks.ROWS)
