"""Document deduplication: exact (normalised hash) and MinHash-LSH near-duplicates.

Web and PDF corpora repeat themselves (mirrors, boilerplate, lightly edited copies); Intern-S1
removes exact and near duplicates globally (page-level dedup, Intern-S1 report Fig. 7). Two stages:

1. Exact: `exact_key(text)` = BLAKE2b of the text after NFKC, lowercasing, punctuation removal and
   whitespace collapsing, so copies differing only in case, spacing or punctuation collide.
2. Near: word 5-gram shingles -> MinHash signature (uint32[P]) -> LSH banding (b bands x r rows)
   -> candidate pairs -> (optionally) verified by signature agreement >= threshold -> union-find
   clusters; the first document of each cluster (input order) is kept.

Our MinHash is vectorised numpy: shingles of a whole batch are concatenated and hashed by P
multiply-shift functions h(x) = ((a*x + b) mod 2^64) >> 32 (Dietzfelbinger's universal family,
one uint64 multiply, no modulo), and per-document minima come from one `np.minimum.reduceat`.
`datasketch` (the field's reference: SHA-1 shingles, Mersenne-prime permutations, MinHashLSH) is
wired in the same API (`engine="datasketch"`) so bench/corpus.py measures speed and agreement.

Signatures are plain uint32 arrays: the pipeline stores them in a Parquet column, and the global
reduce (LSH over all shards) needs only those, not the text.

CLI (`opens1 data dedup`, src/opens1/cli/data.py):

    opens1 data dedup docs.jsonl -o unique.jsonl                  # exact + MinHash-LSH (ours)
    opens1 data dedup docs.jsonl -o unique.jsonl --threshold 0.7 --engine datasketch
    opens1 data dedup a.jsonl b.parquet -o unique.jsonl --exact-only
"""

from __future__ import annotations

import hashlib
import unicodedata
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import regex as re

_PUNCT = re.compile(r"[\p{P}\p{S}]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_MASK32 = np.uint64(0xFFFFFFFF)


@dataclass
class DedupConfig:
    num_perm: int = 128
    ngram: int = 5  # word shingle size
    threshold: float = 0.8  # Jaccard similarity that counts as a near duplicate
    seed: int = 1
    verify: bool = True  # drop LSH candidates whose signature agreement < threshold
    engine: str = "ours"  # or "datasketch"


def normalize(text: str) -> str:
    """NFKC, lowercase, punctuation/symbols to spaces, whitespace collapsed."""
    t = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", t).split())


def exact_key(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).hexdigest()


def _cjk_grams(text: str, words: list[str], n: int) -> list[str] | None:
    """Character n-grams of CJK text, which has no spaces between words (a page of Chinese
    is a handful of "words", too few for word shingles); None for other text."""
    if len(words) >= 2 * n or not _CJK.search(text):
        return None
    chars = "".join(words)
    return [chars[i : i + n] for i in range(len(chars) - n + 1)] or [chars]


def shingles(text: str, n: int = 5) -> set[str]:
    """The shingles `shingle_hashes` hashes, as strings: word n-grams of the normalised text
    (one shingle of all words when shorter), character n-grams for CJK text."""
    words = normalize(text).split()
    grams = _cjk_grams(text, words, n)
    if grams is not None:
        return set(grams)
    n = min(n, max(len(words), 1))
    return {" ".join(words[i : i + n]) for i in range(max(len(words) - n + 1, 0))}


def shingle_hashes(text: str, n: int = 5) -> np.ndarray:
    """Unique 32-bit hashes of the shingles of the normalised text: uint64[S] (values < 2^32).

    Words are hashed once (crc32, stable across processes); n-grams are combined in numpy as a
    polynomial in the word hashes, so the cost per document is one C call per word. CJK text
    hashes its character n-grams (see `shingles`)."""
    words = normalize(text).split()
    if not words:
        return np.zeros(0, dtype=np.uint64)
    grams = _cjk_grams(text, words, n)
    if grams is not None:
        return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams)))
    w = np.fromiter((zlib.crc32(x.encode()) for x in words), dtype=np.uint64, count=len(words))
    if len(w) < n:  # short documents: one shingle of all words
        n = len(w)
    g = np.zeros(len(w) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 wrap-around is the intended modular arithmetic
        for j in range(n):
            g = g * np.uint64(0x100000001B3) + w[j : len(w) - n + 1 + j]
        g = (g * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)  # mix high bits down to 32
    return np.unique(g)


class MinHasher:
    """P multiply-shift hash functions; `signatures(list of shingle arrays)` -> uint32[N, P]."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)  # odd
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signatures(self, shingles: Sequence[np.ndarray], chunk: int = 1 << 12) -> np.ndarray:
        n = len(shingles)
        out = np.full((n, self.num_perm), 0xFFFFFFFF, dtype=np.uint32)  # empty doc: all max
        start = 0
        while start < n:
            # Grow a chunk of documents until ~`chunk` shingles: keeps the [P, S] temporary (4 MiB at
            # P=128, S=4096) near cache size; 4x larger chunks measured ~2.5x slower.
            stop, total = start, 0
            while stop < n and (total == 0 or total + len(shingles[stop]) <= chunk):
                total += len(shingles[stop])
                stop += 1
            docs = [i for i in range(start, stop) if len(shingles[i])]
            if docs:
                h = np.concatenate([shingles[i] for i in docs])  # [S]
                offsets = np.cumsum([0] + [len(shingles[i]) for i in docs[:-1]])
                with np.errstate(over="ignore"):
                    v = np.multiply(self.a[:, None], h[None, :])  # [P, S], in place below
                    v += self.b[:, None]
                    v >>= np.uint64(32)
                out[docs] = np.minimum.reduceat(v, offsets, axis=1).T.astype(np.uint32)  # [D, P]
            start = stop
        return out

    def __call__(self, texts: Sequence[str], ngram: int = 5) -> np.ndarray:
        return self.signatures([shingle_hashes(t, ngram) for t in texts])


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false-positive + false-negative area of the LSH S-curve, the rule
    datasketch uses, by numeric integration on a grid."""
    xs = np.linspace(0, 1, 201)
    best, arg = float("inf"), (1, num_perm)
    lo, hi = xs[xs <= threshold], xs[xs >= threshold]
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo**r) ** b, lo)  # P(candidate | Jaccard x) below threshold
            fn = np.trapezoid((1 - hi**r) ** b, hi)  # P(missed | Jaccard x) above it
            if fp + fn < best:
                best, arg = fp + fn, (b, r)
    return arg


class _UnionFind:
    def __init__(self, n: int):
        self.p = list(range(n))

    def find(self, x: int) -> int:
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller index is the root, so the first document is the one kept
            self.p[max(ra, rb)] = min(ra, rb)


def lsh_clusters(sigs: np.ndarray, threshold: float = 0.8, *, verify: bool = True,
                 bands: int | None = None) -> np.ndarray:
    """Cluster id (index of the cluster's first document) per row of uint32[N, P] signatures."""
    n, p = sigs.shape
    b, r = (bands, p // bands) if bands else optimal_bands(float(threshold), p)
    uf = _UnionFind(n)
    for k in range(b):
        band = np.ascontiguousarray(sigs[:, k * r : (k + 1) * r]).view(np.dtype((np.void, 4 * r))).ravel()
        _, inv, counts = np.unique(band, return_inverse=True, return_counts=True)
        for g in np.nonzero(counts > 1)[0]:
            members = np.nonzero(inv == g)[0]
            first = members[0]
            for m in members[1:]:
                if not verify or np.mean(sigs[first] == sigs[m]) >= threshold:
                    uf.union(int(first), int(m))
    return np.array([uf.find(i) for i in range(n)])


# ---------------------------------------------------------------------- datasketch reference


def datasketch_signatures(texts: Sequence[str], cfg: DedupConfig) -> list:
    """datasketch MinHash objects over the same normalised word shingles."""
    from datasketch import MinHash

    out = []
    for t in texts:
        grams = [g.encode() for g in shingles(t, cfg.ngram)]
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        if grams:
            m.update_batch(grams)
        out.append(m)
    return out


def datasketch_clusters(minhashes: list, threshold: float = 0.8, num_perm: int = 128) -> np.ndarray:
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    uf = _UnionFind(len(minhashes))
    for i, m in enumerate(minhashes):
        for j in lsh.query(m):
            uf.union(i, int(j))
    return np.array([uf.find(i) for i in range(len(minhashes))])


# ------------------------------------------------------------------------------------ driver


@dataclass
class DedupStats:
    n_in: int
    exact_dups: int
    near_dups: int

    @property
    def n_out(self) -> int:
        return self.n_in - self.exact_dups - self.near_dups


def dedup_mask(texts: Sequence[str], cfg: DedupConfig | None = None, *, exact_only: bool = False) -> tuple[np.ndarray, DedupStats]:
    """bool[N] keep-mask (first of each exact/near-duplicate group kept) and counts."""
    cfg = cfg or DedupConfig()
    keep = np.ones(len(texts), dtype=bool)
    seen: set[str] = set()
    for i, t in enumerate(texts):
        k = exact_key(t)
        keep[i] = k not in seen
        seen.add(k)
    exact = int((~keep).sum())
    near = 0
    idx = np.nonzero(keep)[0]
    if not exact_only and len(idx) > 1:
        sub = [texts[i] for i in idx]
        if cfg.engine == "datasketch":
            roots = datasketch_clusters(datasketch_signatures(sub, cfg), cfg.threshold, cfg.num_perm)
        elif cfg.engine == "ours":
            roots = lsh_clusters(MinHasher(cfg.num_perm, cfg.seed)(sub, cfg.ngram), cfg.threshold, verify=cfg.verify)
        else:
            raise ValueError(f"unknown dedup engine {cfg.engine!r} (ours, datasketch)")
        dup = roots != np.arange(len(sub))
        keep[idx[dup]] = False
        near = int(dup.sum())
    return keep, DedupStats(len(texts), exact, near)
