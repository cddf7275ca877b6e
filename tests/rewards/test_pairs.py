"""Verifier accuracy on a labelled pair set built from real data (unseen, seeded)."""

from collections import defaultdict

from opens1.rewards import verify
from opens1.rewards.pairs import make_pairs


def test_pair_accuracy_at_least_95_percent():
    pairs = make_pairs(n_per_kind=4, seed=123)  # 56 pairs: "a few dozen"
    assert sum(p["label"] for p in pairs) == len(pairs) // 2
    hits = defaultdict(list)
    for p in pairs:
        r = verify(p["kind"], p["prediction"], p["reference"], **p["options"])
        hits[p["kind"]].append((r.score >= 1.0) == bool(p["label"]))
    total = sum(map(sum, hits.values())) / sum(map(len, hits.values()))
    assert len(hits) == 7
    assert total >= 0.95, {k: sum(v) / len(v) for k, v in hits.items()}
