"""Corpus-building benchmark: filter/classifier/dedup throughput, classifier precision/recall on the
hand-labelled set, and scientific purity of a realistic mixed corpus before and after filtering.

    python bench/corpus.py                 # default: ~1 minute on one core
    python bench/corpus.py --docs 20000    # bigger throughput/dedup run (all ~19k real documents)
    python bench/corpus.py --science-ratio 0.05

What it measures (all on real text, see bench/data/README.md):
1. Throughput per core (one process): quality metrics + rules, classifier inference, and dedup
   (our vectorised MinHash + LSH vs datasketch's MinHash + MinHashLSH; same shingles, threshold
   and band split), plus the two dedups' agreement and recall of planted near-duplicates.
2. Classifier precision/recall on bench/data/corpus_eval.jsonl (172 hand-labelled Wikipedia leads
   and Usenet posts), for the shipped model, at several P(science) thresholds, per source.
3. Purity: a classifier is retrained on 80% of every training source; the held-out 20% (plus the
   hand-labelled documents) are mixed at `--science-ratio` science and run through (a) the doc-level
   classifier cut and (b) the whole `opens1 data build` pipeline (quality, validity, per-source
   judging, doc cut, dedup). Purity = share of science among kept documents (labels: the source's
   own label for held-out training sources, the hand label for eval documents).
Timings are wall-clock on a shared machine: treat them as rough.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from opens1.corpus import classify as C  # noqa: E402
from opens1.corpus import dedup as D  # noqa: E402
from opens1.corpus import filters as F  # noqa: E402
from opens1.corpus import pipeline as P  # noqa: E402
from opens1.corpus.executors import LocalExecutor  # noqa: E402


def jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def rate(n: int, fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t), out


def bench_throughput(n_docs: int, seed: int) -> dict:
    texts = [d["text"] for d in jsonl(DATA / "nonscience.jsonl.gz")] + [d["text"] for d in jsonl(DATA / "wiki.jsonl.gz")]
    if n_docs > len(texts):  # bigger runs: every real document we have (~19k with ../shared/data)
        texts += [d["text"] for d in jsonl(DATA / "gcide.jsonl.gz")]
        texts += [t for t, _ in C.science_examples(SHARED if SHARED.is_dir() else None, per_domain=10**9)]
    rng = random.Random(seed)
    base = texts[:n_docs]
    res = {}
    res["filter_docs_per_s"], _ = rate(len(base), lambda: [F.quality_check(F.quality_metrics(t)) for t in base])
    clf = C.load_classifier()
    res["classify_docs_per_s"], _ = rate(len(base), lambda: clf.predict(base))
    # Dedup corpus: the base documents plus planted near-duplicates (2% of words edited) of 20% of them.
    planted = []
    for t in base[: len(base) // 5]:
        w = t.split()
        for _ in range(max(1, len(w) // 50)):
            w[rng.randrange(len(w))] = "edited"
        planted.append(" ".join(w))
    corpus = base + planted
    n = len(corpus)
    cfg = D.DedupConfig(threshold=0.7)
    t0 = time.perf_counter()
    sh = [D.shingle_hashes(t, cfg.ngram) for t in corpus]
    t1 = time.perf_counter()
    sigs = D.MinHasher(cfg.num_perm, cfg.seed).signatures(sh)
    t2 = time.perf_counter()
    roots = D.lsh_clusters(sigs, cfg.threshold, verify=False)
    t3 = time.perf_counter()
    mhs = D.datasketch_signatures(corpus, cfg)
    t4 = time.perf_counter()
    ref_roots = D.datasketch_clusters(mhs, cfg.threshold, cfg.num_perm)
    t5 = time.perf_counter()
    ours_drop, ref_drop = roots != np.arange(n), ref_roots != np.arange(n)
    res.update({
        "dedup_docs": n,
        "ours_docs_per_s": n / (t3 - t0), "ours_minhash_only_docs_per_s": n / (t2 - t1),
        "datasketch_docs_per_s": n / (t5 - t3),  # its own shingling + hashing + LSH
        "datasketch_minhash_only_docs_per_s": n / (t4 - t3),
        "agreement_keep_decision": float((ours_drop == ref_drop).mean()),
        "planted_recall_ours": float(ours_drop[len(base):].mean()),
        "planted_recall_datasketch": float(ref_drop[len(base):].mean()),
        # The real sources repeat themselves (the same fortune in two files, Debian READMEs), so
        # some base documents are genuine duplicates too: counted, not called errors.
        "base_docs_dropped_ours": int(ours_drop[: len(base)].sum()),
        "base_docs_dropped_datasketch": int(ref_drop[: len(base)].sum()),
    })
    res["dedup_speedup_end_to_end"] = res["ours_docs_per_s"] / res["datasketch_docs_per_s"]
    res["dedup_speedup_minhash"] = res["ours_minhash_only_docs_per_s"] / res["datasketch_minhash_only_docs_per_s"]
    return res


def bench_eval_set(clf: C.ScienceClassifier) -> dict:
    rows = jsonl(DATA / "corpus_eval.jsonl")
    scores = np.array([p.science for p in clf.predict([r["text"] for r in rows])])
    gold = np.array([r["label"] for r in rows], dtype=bool)
    out = {"n": len(rows), "n_science": int(gold.sum())}
    for thr in (0.2, 0.3, 0.5):
        out[f"@{thr}"] = {k: round(float(v), 3) for k, v in C.precision_recall(list(scores >= thr), list(gold)).items()
                          if k in ("precision", "recall", "f1")}
    for src in ("wikipedia", "newsgroups"):
        k = np.array([r["source"] == src for r in rows])
        pos, neg = scores[k & gold][:, None], scores[k & ~gold][None, :]
        out[f"auc_{src}"] = round(float(((pos > neg) + 0.5 * (pos == neg)).mean()), 3)
    pos, neg = scores[gold][:, None], scores[~gold][None, :]
    out["auc_all"] = round(float(((pos > neg) + 0.5 * (pos == neg)).mean()), 3)
    # Silver newsgroup labels (sci.* = science) vs the hand labels of the same kind of post.
    ng = [r for r in rows if r["source"] == "newsgroups"]
    out["newsgroup_silver_label_agreement"] = round(
        float(np.mean([r["group"].startswith(("sci.", "alt.sci")) == bool(r["label"]) for r in ng])), 3)
    return out


def split_sources(seed: int, holdout: float = 0.2):
    """(train pairs, held-out docs with labels) over every classifier training source."""
    rng = random.Random(seed)
    train, held = [], []

    def split(items):
        items = list(items)
        rng.shuffle(items)
        k = int(len(items) * holdout)
        return items[k:], items[:k]

    sci = C.science_examples(SHARED if SHARED.is_dir() else None, per_domain=10**9)
    by_dom: dict[str, list[str]] = {}
    for t, d in sci:
        by_dom.setdefault(d, []).append(t)
    for dom, texts in by_dom.items():
        tr, he = split(texts)
        train += [(t, dom) for t in tr[:1500]]
        held += [{"text": t, "source": f"qa/{dom}", "label": 1} for t in he]
    neg = jsonl(DATA / "nonscience.jsonl.gz")
    tr, he = split(neg)
    train += [(d["text"], "none") for d in tr[:3000]]
    held += [{"text": d["text"], "source": d["source"].split("/")[0], "label": 0} for d in he]
    gc = jsonl(DATA / "gcide.jsonl.gz")
    tr, he = split(gc)
    train += [(d["text"], d["domain"]) for d in tr]
    held += [{"text": d["text"], "source": f"gcide/{'science' if d['domain'] != 'none' else 'none'}",
              "label": int(d["domain"] != "none")} for d in he]
    return train, held


def bench_purity(science_ratio: float, seed: int, workdir: Path) -> dict:
    train_pairs, held = split_sources(seed)
    t = time.perf_counter()
    clf = C.train([t for t, _ in train_pairs], [l for _, l in train_pairs], C.ClassifierConfig(seed=seed))
    train_s = time.perf_counter() - t
    model = workdir / "clf"
    clf.save(model)
    held += [{"text": r["text"], "source": r["source"] + "/eval", "label": r["label"]} for r in jsonl(DATA / "corpus_eval.jsonl")]
    rng = random.Random(seed)
    sci = [d for d in held if d["label"]]
    non = [d for d in held if not d["label"]]
    n_sci = min(len(sci), int(round(len(non) * science_ratio / (1 - science_ratio))))
    mixed = rng.sample(sci, n_sci) + non
    rng.shuffle(mixed)
    for i, d in enumerate(mixed):
        d["id"] = f"m{i}"
    labels = {d["id"]: d["label"] for d in mixed}
    res = {"classifier_train_docs": len(train_pairs), "classifier_train_seconds": round(train_s, 1),
           "n_docs": len(mixed), "n_science": n_sci,
           "purity_before": round(float(np.mean([d["label"] for d in mixed])), 4)}
    preds = clf.predict([d["text"] for d in mixed])
    for thr in (0.3, 0.5, 0.7):
        kept = [d["label"] for d, p in zip(mixed, preds) if p.science >= thr]
        res[f"doc_cut@{thr}"] = {"purity": round(float(np.mean(kept)), 4) if kept else None, "kept": len(kept),
                                 "science_recall": round(sum(kept) / max(n_sci, 1), 4)}
    src = workdir / "mixed.jsonl"
    src.write_text("".join(json.dumps({k: d[k] for k in ("id", "text", "source")}) + "\n" for d in mixed))
    cfg = P.PipelineConfig(inputs=[str(src)], output=str(workdir / "out"), shard_size=2000, min_words=20,
                           classifier=str(model), min_science=0.5, domain_k=20, domain_threshold=0.3, seed=seed)
    t = time.perf_counter()
    manifest = P.run_pipeline(cfg, LocalExecutor(1))
    res["pipeline_seconds"] = round(time.perf_counter() - t, 1)
    res["pipeline_docs_per_s_one_worker"] = round(len(mixed) / res["pipeline_seconds"], 1)
    import pyarrow.parquet as pq

    out_ids = [i for f in sorted((workdir / "out").glob("shard-*.parquet")) for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    kept = [labels[i] for i in out_ids]
    res["pipeline"] = {"purity": round(float(np.mean(kept)), 4) if kept else None, "kept": len(kept),
                       "science_recall": round(sum(kept) / max(n_sci, 1), 4),
                       "phase_a": manifest["phase_a"], "phase_b": manifest["phase_b"],
                       "sources_kept": sorted(s for s, d in manifest["domains"].items() if d["keep"])}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000, help="documents for the throughput/dedup runs")
    ap.add_argument("--science-ratio", type=float, default=0.07)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    report = {"throughput_one_core": bench_throughput(args.docs, args.seed)}
    report["eval_shipped_classifier"] = bench_eval_set(C.load_classifier())
    with tempfile.TemporaryDirectory() as tmp:
        report["purity"] = bench_purity(args.science_ratio, args.seed, Path(tmp))
    print(json.dumps(report, indent=1, default=lambda x: round(float(x), 2)))
    th = report["throughput_one_core"]
    print(f"\ndedup ours {th['ours_docs_per_s']:.0f} docs/s vs datasketch {th['datasketch_docs_per_s']:.0f} docs/s: "
          f"x{th['dedup_speedup_end_to_end']:.1f} end to end, x{th['dedup_speedup_minhash']:.1f} MinHash only; "
          f"agreement {th['agreement_keep_decision']:.3f}")
    pu = report["purity"]
    print(f"purity {pu['purity_before']:.3f} -> doc cut@0.5 {pu['doc_cut@0.5']['purity']} -> pipeline "
          f"{pu['pipeline']['purity']} (science recall {pu['pipeline']['science_recall']})")


if __name__ == "__main__":
    main()
