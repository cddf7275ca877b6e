"""Exact and MinHash-LSH dedup on real documents, ours against datasketch."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from opens1.cli.data import dedup_docs
from opens1.corpus import dedup as D

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


@pytest.fixture(scope="module")
def docs():
    with gzip.open(DATA / "nonscience.jsonl.gz", "rt") as f:
        texts = [json.loads(l)["text"] for l in f]
    # Long enough for stable 5-gram sets. The fortune files really do repeat a few cookies (same
    # quote, other attribution): drop those first so the originals are distinct.
    long = [t for t in texts if len(t.split()) >= 80][:320]
    keep, stats = D.dedup_mask(long)
    assert stats.exact_dups + stats.near_dups < 10
    return [t for t, k in zip(long, keep) if k][:300]


def _edit(text, frac, rng):
    w = text.split()
    for _ in range(max(1, int(len(w) * frac))):
        w[rng.randrange(len(w))] = "edited"
    return " ".join(w)


def test_exact_key_ignores_case_space_punctuation():
    assert D.exact_key("Hello,  World!\n") == D.exact_key("hello world")
    assert D.exact_key("hello world") != D.exact_key("hello there world")


def test_signature_estimates_jaccard(docs):
    rng = random.Random(0)
    mh = D.MinHasher(256, seed=3)
    errs = []
    for t in docs[:40]:
        u = _edit(t, 0.02, rng)
        a, b = D.shingle_hashes(t), D.shingle_hashes(u)
        true = len(np.intersect1d(a, b)) / len(np.union1d(a, b))
        sig = mh.signatures([a, b])
        errs.append(abs(np.mean(sig[0] == sig[1]) - true))
    assert np.mean(errs) < 0.04  # standard error at P=256 is ~0.03


def test_near_duplicates_found_and_unrelated_kept(docs):
    rng = random.Random(1)
    copies = [_edit(t, 0.005, rng) for t in docs[:50]]  # one or two words changed: Jaccard ~0.95
    texts = docs + copies + [docs[0].upper()]  # plus an exact (case-only) copy
    keep, stats = D.dedup_mask(texts, D.DedupConfig(threshold=0.8))
    assert stats.exact_dups == 1
    assert keep[: len(docs)].all()  # originals come first and are kept
    assert (~keep[len(docs) : len(docs) + 50]).mean() > 0.95  # copies removed
    assert stats.n_out == keep.sum()


def test_ours_agrees_with_datasketch(docs):
    rng = random.Random(2)
    texts = docs[:150] + [_edit(t, 0.01, rng) for t in docs[:60]]
    ours, _ = D.dedup_mask(texts, D.DedupConfig(threshold=0.7, engine="ours", verify=False))
    ref, _ = D.dedup_mask(texts, D.DedupConfig(threshold=0.7, engine="datasketch"))
    assert (ours == ref).mean() > 0.95
    assert D.optimal_bands(0.7, 128) == (14, 9)  # datasketch's MinHashLSH picks the same split


def test_empty_and_short_documents():
    sigs = D.MinHasher(16).signatures([np.zeros(0, dtype=np.uint64), D.shingle_hashes("two words")])
    assert sigs.shape == (2, 16) and (sigs[0] == 0xFFFFFFFF).all() and (sigs[1] < 0xFFFFFFFF).any()
    with pytest.raises(ValueError, match="engine"):
        D.dedup_mask(["a b", "c d"], D.DedupConfig(engine="nope"))


def test_dedup_cli(tmp_path, docs):
    src = tmp_path / "in.jsonl"
    rows = [{"id": i, "text": t} for i, t in enumerate(docs[:20] + docs[:5])]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert dedup_docs([str(src), "-o", str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(l)["id"] for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == list(range(20))


def test_cjk_text_is_shingled_by_characters():
    assert D.shingles("交换商品的价值，规律", 5) == {"交换商品的", "换商品的价", "商品的价值", "品的价值规", "的价值规律"}
    assert D.shingles("价值", 5) == {"价值"}  # shorter than a shingle: one shingle of it all
    assert D.shingles("The cat sat on the mat today", 5) == {"the cat sat on the", "cat sat on the mat",
                                                              "sat on the mat today"}
    assert len(D.shingle_hashes("交换商品的价值，规律", 5)) == 5
    near = "本文研究了在高温高压条件下水的相变行为并给出了相图"
    sigs = D.MinHasher(128)([near, near + "。", "完全不同的另一段文字内容用于对照检查结果"])
    assert D.lsh_clusters(sigs, 0.8).tolist() == [0, 0, 2]
