"""Stable digests: fixed values (the same in every process), canonical JSON, file sha256."""

import hashlib

from opens1.common.hashing import file_sha256, json_digest, text_digest


def test_text_digest_is_stable_and_cut():
    assert text_digest("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"  # sha1("abc")
    assert text_digest("abc", length=8) == "a9993e36"
    assert text_digest("abc", algorithm="sha256") == hashlib.sha256(b"abc").hexdigest()


def test_json_digest_ignores_key_order():
    assert json_digest({"a": 1, "b": [1, 2]}) == json_digest({"b": [1, 2], "a": 1})
    assert json_digest({"a": 1}) != json_digest({"a": 2})
    assert len(json_digest({"a": 1}, length=16)) == 16


def test_file_sha256_reads_in_chunks(tmp_path):
    data = bytes(range(256)) * 1000
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert file_sha256(p, chunk=1000) == file_sha256(p) == hashlib.sha256(data).hexdigest()
