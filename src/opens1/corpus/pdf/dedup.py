"""Near-duplicate pages across documents (boilerplate: licence pages, cover sheets), with
the corpus MinHash (corpus/dedup.py: word 5-shingles, character 5-grams for CJK pages)."""

from __future__ import annotations

from opens1.corpus.dedup import MinHasher, lsh_clusters, shingle_hashes


def dedup_pages(docs: list[dict], threshold: float, *, min_shingles: int = 20, num_perm: int = 128) -> int:
    """Global page-level near-duplicate removal. Pages whose MinHash signatures agree on at
    least `threshold` cluster together (LSH candidates, union-find); every page of a cluster
    but the first in input order is marked dropped="duplicate" with duplicate_of naming the
    first ("<doc>#<page>"). Pages too short to judge, and pages already dropped for another
    reason, are left alone. Returns the number of pages dropped."""
    pages: list[tuple[dict, object]] = []
    for doc in docs:
        for page, rec in zip(doc["pages"], doc["records"]):
            rec.pop("duplicate_of", None)
            if rec.get("dropped") == "duplicate":
                del rec["dropped"]  # recomputed on every run
            if rec.get("dropped"):
                continue
            shingles = shingle_hashes(page, 5)
            if len(shingles) >= min_shingles:
                pages.append((rec, shingles))
    if len(pages) < 2:
        return 0
    roots = lsh_clusters(MinHasher(num_perm).signatures([s for _, s in pages]), threshold)
    dropped = 0
    for (rec, _), root in zip(pages, roots):
        first = pages[root][0]
        if first is not rec:
            rec["dropped"], rec["duplicate_of"] = "duplicate", f"{first['doc']}#{first['page']}"
            dropped += 1
    return dropped
