"""Verifier benchmark: throughput on mixed answers and accuracy on a labelled pair set.

    python bench/verifiers.py                 # 10,000 mixed answers + 420 pairs (~1 min on 2 busy cores)
    python bench/verifiers.py --n 2000 --pairs-per-kind 10 --code 10

Measured in the same run:
- accuracy of `opens1.rewards.verify` on unseen equivalent / non-equivalent pairs
  (RDKit-randomised SMILES, rewritten formulas, re-typeset math, unit conversions,
  ...; see opens1/rewards/pairs.py), against the reference a naive harness uses:
  exact string match of the extracted answer;
- throughput (answers/s) of our verifiers on n mixed answers vs the bare library
  calls they wrap (math-verify parse+verify, RDKit canonicalisation) on the same
  answers, so the ratio is the cost of extraction, unit handling and safety;
- code-sandbox latency per run (process start + limits), measured separately.
Timings on a shared machine are noisy; treat them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from opens1.rewards import verify
from opens1.rewards.extract import extract
from opens1.rewards.pairs import make_pairs


def accuracy(pairs):
    ours, naive = defaultdict(list), defaultdict(list)
    for p in pairs:
        r = verify(p["kind"], p["prediction"], p["reference"], **p["options"])
        ours[p["kind"]].append((r.score >= 1.0) == bool(p["label"]))
        ex = extract(p["prediction"]).answer or ""
        same = ex.strip().strip(".$ ") == str(p["reference"]).strip()
        naive[p["kind"]].append(same == bool(p["label"]))
    return ours, naive


def _library_only(p):
    """What the verifier costs without our layer: the bare library call on the extracted answer."""
    ans = extract(p["prediction"]).answer or ""
    kind = p["kind"]
    if kind == "math":
        from math_verify import parse, verify as mv

        return mv(parse(f"${p['reference']}$"), parse(f"${ans}$"))
    if kind in ("smiles", "reaction"):
        from rdkit import Chem

        a, b = Chem.MolFromSmiles(ans), Chem.MolFromSmiles(str(p["reference"]).split(">")[-1])
        return a is not None and b is not None and Chem.MolToSmiles(a) == Chem.MolToSmiles(b)
    return ans == str(p["reference"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="mixed answers for the throughput run")
    ap.add_argument("--pairs-per-kind", type=int, default=30)
    ap.add_argument("--code", type=int, default=20, help="sandboxed code runs to time")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t = time.perf_counter()
    pairs = make_pairs(args.pairs_per_kind, args.seed)
    print(f"built {len(pairs)} labelled pairs in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    ours, naive = accuracy(pairs)
    dt = time.perf_counter() - t
    print(f"\naccuracy on the pair set ({len(pairs)} pairs, verified in {dt:.1f}s)")
    print(f"{'kind':10s} {'ours':>7s} {'exact-match':>12s}")
    for k in ours:
        print(f"{k:10s} {sum(ours[k]) / len(ours[k]):7.3f} {sum(naive[k]) / len(naive[k]):12.3f}")
    o = sum(map(sum, ours.values())) / len(pairs)
    nv = sum(map(sum, naive.values())) / len(pairs)
    print(f"{'all':10s} {o:7.3f} {nv:12.3f}   (errors: ours {1 - o:.3f}, exact-match {1 - nv:.3f})")

    # Throughput: n answers cycling through fresh pairs of every kind (a second seed).
    stream = make_pairs(min(150, max(10, args.n // 14 + 1)), args.seed + 1)
    stream = (stream * (args.n // len(stream) + 1))[: args.n]
    t = time.perf_counter()
    for p in stream:
        verify(p["kind"], p["prediction"], p["reference"], **p["options"])
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    for p in stream:
        _library_only(p)
    lib_s = time.perf_counter() - t
    print(f"\nthroughput on {len(stream)} mixed answers (7 kinds; repeated references hit RDKit caches, "
          f"as RL's 8 samples per prompt do)")
    print(f"  opens1.rewards.verify : {len(stream) / ours_s:8.0f} answers/s ({ours_s:.1f}s)")
    print(f"  bare library calls    : {len(stream) / lib_s:8.0f} answers/s ({lib_s:.1f}s)")
    print(f"  ratio ours/library time: {ours_s / lib_s:.2f}x")

    if args.code:
        sol = "```python\ndef f(x):\n    return x * 2\n```"
        t = time.perf_counter()
        scores = [verify("code", sol, ["assert f(2) == 4", "assert f(0) == 0"]).score for _ in range(args.code)]
        dt = time.perf_counter() - t
        print(f"\ncode sandbox: {args.code} runs, {1000 * dt / args.code:.0f} ms/run, all passed: {min(scores) == 1.0}")


if __name__ == "__main__":
    main()
