"""JSONL documents: read from JSONL, .jsonl.gz and Parquet; bad rows named; atomic writes."""

import gzip
import json

import pytest

from opens1.common.jsonl import check_document, read_documents, write_jsonl


def test_bad_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_documents(tmp_path / "missing.jsonl"))
    p = tmp_path / "x.jsonl"
    p.write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError, match="text"):
        list(read_documents(p))
    p.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: not valid JSON"):
        list(read_documents(p))


def test_check_document_names_the_file():
    assert check_document({"text": "a", "id": 1}, "f.jsonl") == {"text": "a", "id": 1}
    with pytest.raises(ValueError, match="f.jsonl: every document needs a string 'text'"):
        check_document({"text": 3}, "f.jsonl")
    with pytest.raises(ValueError, match="f.jsonl"):
        check_document(["text"], "f.jsonl")


def test_write_then_read_round_trips_plain_gzip_and_parquet(tmp_path):
    docs = [{"text": "Schrödinger équation", "id": "a"}, {"text": "second", "id": "b"}]
    assert write_jsonl(tmp_path / "sub" / "d.jsonl", iter(docs)) == 2
    plain = tmp_path / "sub" / "d.jsonl"
    assert "Schrödinger" in plain.read_text(encoding="utf-8")  # non-ASCII kept as is
    assert list(read_documents(plain)) == docs
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n" + "".join(json.dumps(d) + "\n" for d in docs) + "\n")  # blank lines skipped
    assert list(read_documents(gz)) == docs
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(docs), tmp_path / "d.parquet")
    assert list(read_documents(tmp_path / "d.parquet")) == docs
    assert not list(tmp_path.glob("**/*.tmp*"))  # the atomic write left no temp file
