"""The evaluation harness: environments x backend -> saved generations -> scores.

Reproducibility is the point. Every generation is saved (JSONL, one record per
sample) with the full case (prompt, reference, meta), the sampling parameters,
the chat-template hash and the verifier's reason, so a run can be re-scored
later without generating again (`rescore`), e.g. after a verifier fix, and two
runs can be diffed item by item.

Scores follow the multi-run protocol (Intern-S1 / OpenCompass average 8-32
runs): with n samples per item, run k is "sample k of every item"; the score is
the mean of the per-run accuracies and its standard error is the standard
deviation across runs / sqrt(n). With one sample, the error is the binomial
standard error over items.
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
from pathlib import Path

from opens1.atomic import atomic_write
from opens1.envs import Case, get_env, list_envs
from opens1.envs.base import env_class
from opens1.eval.backends import EVAL_SAMPLING
from opens1.infer.sampling import SamplingParams


def resolve_tasks(patterns: list[str], data_root=None) -> list[str]:
    """Task names from names or globs ("chem/*"); unknown names are an error."""
    # Globs match only tasks whose data exists, so "physics/*" without a SciBench
    # root is an error below rather than a silent empty run.
    available = list_envs(data_root=data_root, available_only=True)
    everything = list_envs()
    out: list[str] = []
    for pat in patterns:
        hits = [t for t in available if fnmatch.fnmatch(t, pat)]
        if not hits:
            if pat in everything:
                raise FileNotFoundError(f"task {pat!r} needs data not under data root {data_root!r}")
            raise ValueError(f"no task matches {pat!r}; known: {', '.join(everything)}")
        out += [h for h in hits if h not in out]
    return out


def _case_record(case: Case) -> dict:
    # The whole case is stored, not just its id: re-scoring must not depend on the
    # environment regenerating identical cases (data roots and code change).
    return {"id": case.id, "prompt": case.prompt, "reference": case.reference, "meta": case.meta}


def write_jsonl_atomic(path: str | Path, records) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no generations file {str(path)!r}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def generate_records(backend, tasks: list[str], n_items: int, n_samples: int,
                     sampling: SamplingParams = EVAL_SAMPLING, split: str = "heldout", difficulty: str | None = None,
                     data_root=None, batch_size: int = 8, model_name: str = "", enable_thinking: bool = True) -> list[dict]:
    """Generate n_samples per case for the first n_items cases of each task and grade them."""
    if n_items < 1 or n_samples < 1:
        raise ValueError("n_items and n_samples must be >= 1")
    records = []
    for task in tasks:
        env = get_env(task, data_root)
        cases = env.cases(n_items, split, difficulty)
        for start in range(0, len(cases), batch_size):
            batch = cases[start:start + batch_size]
            t0 = time.time()
            outs = backend.generate([c.messages() for c in batch], n_samples, sampling, enable_thinking)
            dt = (time.time() - t0) / max(1, len(batch) * n_samples)  # seconds per sample, for cost logs
            for case, texts in zip(batch, outs):
                for k, text in enumerate(texts):
                    res = env.verify(text, case)
                    records.append({"task": task, "case": _case_record(case), "sample": k, "generation": text,
                                    "score": res.score, "reason": res.reason, "extracted": res.extracted,
                                    "sampling": {**sampling.to_dict(), "enable_thinking": enable_thinking},
                                    "template_hash": backend.template_hash,
                                    "model": model_name, "seconds": round(dt, 4)})
    return records


def rescore_records(records: list[dict]) -> list[dict]:
    """Re-grade saved generations with the current verifiers (no generation)."""
    out = []
    for r in records:
        c = r["case"]
        case = Case(c["id"], c["prompt"], c["reference"], c["meta"])
        # Verifying needs no data files, so the environment is built without a root.
        res = env_class(r["task"])(None).verify(r["generation"], case)
        out.append({**r, "score": res.score, "reason": res.reason, "extracted": res.extracted})
    return out


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def summarize(records: list[dict]) -> dict:
    """Per-task mean, standard error and per-difficulty means (see module docstring)."""
    tasks: dict[str, list[dict]] = {}
    for r in records:
        tasks.setdefault(r["task"], []).append(r)
    results = {}
    for task, rs in tasks.items():
        n_samples = 1 + max(r["sample"] for r in rs)
        items = sorted({r["case"]["id"] for r in rs})
        # Run k = the k-th sample of every item (OpenCompass's "average over N runs").
        runs = [[r["score"] for r in rs if r["sample"] == k] for k in range(n_samples)]
        run_means = [_mean(run) for run in runs if run]
        mean = _mean(run_means)
        if len(run_means) > 1:
            sd = math.sqrt(sum((m - mean) ** 2 for m in run_means) / (len(run_means) - 1))
            se = sd / math.sqrt(len(run_means))
        else:  # one run: binomial error over items (exact for 0/1 scores, an upper bound otherwise)
            se = math.sqrt(max(mean * (1 - mean), 0.0) / len(items)) if items else float("nan")
        by_diff: dict[str, list[float]] = {}
        for r in rs:
            by_diff.setdefault(r["case"]["meta"].get("difficulty", "?"), []).append(r["score"])
        # pass@n: an item counts if any of its n samples is fully correct.
        pass_at_n = _mean([float(any(r["score"] >= 1.0 for r in rs if r["case"]["id"] == i)) for i in items])
        first = rs[0]
        results[task] = {"mean": mean, "stderr": se, "n_items": len(items), "n_samples": n_samples,
                         f"pass@{n_samples}": pass_at_n,
                         "by_difficulty": {d: _mean(v) for d, v in sorted(by_diff.items())},
                         "sampling": first.get("sampling"), "template_hash": first.get("template_hash"),
                         "model": first.get("model", "")}
    # Macro mean: every task weighs the same, whatever its number of items.
    overall = _mean([v["mean"] for v in results.values()])
    return {"tasks": results, "macro_mean": overall}
