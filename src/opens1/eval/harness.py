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

Read-outs that a model which ignores its input cannot pass:
- the answer prior (`answer_prior`): the score of the best constant answer on the same
  items (every distinct reference is tried as the one response given to every item);
  `above_prior` = score - prior, with the standard error of a difference of two
  proportions on n items, sqrt((a(1-a) + p(1-p)) / n);
- the answer cross-entropy (`answer_cross_entropy`): the bits the model spends on the
  gold answer, -log2 p(answer tokens | prompt, worked response up to "Answer: "),
  averaged over items, beside the entropy of the items' empirical answer distribution
  (`answer_entropy`), which is what the best input-ignoring predictor spends. Below the
  entropy, the model's answer depends on the input even where its argmax is wrong.
"""

from __future__ import annotations

import fnmatch
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from opens1.common.atomic import atomic_write
from opens1.envs import Case, env_class, get_env, list_envs
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


def generate_records(backend, tasks: list[str], *, n_items: int, n_samples: int,
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
            outs = backend.generate([c.messages() for c in batch], n_samples, sampling, enable_thinking=enable_thinking)
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


def constant_response(reference) -> str:
    """The response that always gives `reference` as the answer."""
    if isinstance(reference, dict) and "value" in reference:  # a number with a unit
        reference = f"{reference['value']:g} {reference.get('unit') or ''}".strip()
    return f"Answer: {reference}"


def answer_prior(env, cases: list[Case], max_candidates: int = 32) -> tuple[float, str | None]:
    """(score, answer) of the best constant answer on `cases`: each of the `max_candidates`
    most common references, given as the response to every case, scored by the
    environment's own verifier. With tolerances (5% on a gap) a common value may score
    on many items; an exact-match task's prior is its most common answer's share."""
    if not cases:
        return 0.0, None
    common = Counter(repr(c.reference) for c in cases).most_common(max_candidates)
    best, best_answer = -1.0, None
    for rep, _ in common:
        ref = next(c.reference for c in cases if repr(c.reference) == rep)
        response = constant_response(ref)
        score = sum(float(env.verify(response, c).score) for c in cases) / len(cases)
        if score > best:
            best, best_answer = score, response
    return best, best_answer


def answer_entropy(cases: list[Case]) -> float:
    """Entropy (bits) of the empirical distribution of the cases' references."""
    counts = Counter(repr(c.reference) for c in cases)
    n = sum(counts.values())
    return -sum(k / n * math.log2(k / n) for k in counts.values()) if n else float("nan")


def diff_stderr(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two proportions a and b measured on the same n items
    (treated as independent: an upper bound when the two are positively correlated)."""
    return math.sqrt(max(0.0, a * (1 - a) + b * (1 - b)) / max(1, n))


def _answer_span(tokenizer, response: str) -> tuple[list[int], int]:
    """(token ids of `response`, how many of its last tokens are the final answer value):
    the tokens after the last "Answer: ", found as the ids that encoding the response adds
    to encoding the text before the value."""
    cut = response.rfind("Answer:")
    if cut < 0:
        raise ValueError(f"a worked response must end with an 'Answer:' line, got {response[-60:]!r}")
    cut += len("Answer:")
    while cut < len(response) and response[cut] == " ":
        cut += 1
    full, head = tokenizer.encode(response), tokenizer.encode(response[:cut])
    if full[:len(head)] != head:  # the value's first token merged with the space: count it in
        head = head[:-1]
    return full, len(full) - len(head)


@torch.no_grad()
def answer_cross_entropy(model, tokenizer, processor, env, cases: list[Case], *, batch: int = 16,
                         deadline: float | None = None) -> tuple[float, int]:
    """(mean bits, items): -log2 p(answer tokens | prompt, worked response before the answer),
    teacher-forced on the environment's verified worked response (`sft_response`), for as
    many cases as fit before `deadline` (a time.perf_counter() value). Chats are rendered
    without the thinking prompt, as the speedrun trains and evaluates them."""
    was = model.training
    model.eval()
    bits: list[float] = []
    try:
        for start in range(0, len(cases), batch):
            if deadline is not None and bits and time.perf_counter() >= deadline:
                break
            rows = []
            for c in cases[start:start + batch]:
                response = env.sft_response(c)
                if not response:
                    continue
                prompt = processor(c.messages(), enable_thinking=False)  # ends with the generation prompt
                ids, n_ans = _answer_span(tokenizer, response)
                rows.append((prompt, prompt["input_ids"][0].tolist() + ids, n_ans))
            if not rows:
                continue
            # right padding: under the causal mask the real tokens never see it
            width = max(len(ids) for _, ids, _ in rows)
            pad = tokenizer.pad_token_id
            if pad is None:
                raise ValueError("the tokenizer has no pad token id: the batch is padded with it")
            x = torch.full((len(rows), width), pad, dtype=torch.long)  # [B, W]
            mask = torch.zeros_like(x)
            for i, (_, ids, _) in enumerate(rows):
                x[i, :len(ids)] = torch.tensor(ids)
                mask[i, :len(ids)] = 1
            extra = _concat_media([p for p, _, _ in rows])
            logits = model(input_ids=x, attention_mask=mask, **extra).logits  # [B, W, V]
            for i, (_, ids, n_ans) in enumerate(rows):
                L = len(ids)
                logp = F.log_softmax(logits[i, L - n_ans - 1:L - 1].float(), dim=-1)  # [n_ans, V]
                bits.append(-float(logp.gather(1, x[i, L - n_ans:L, None]).sum()) / math.log(2))
    finally:
        model.train(was)
    return (sum(bits) / len(bits) if bits else float("nan")), len(bits)


def _concat_media(prompts: list[dict]) -> dict:
    """The rows' images and series in row order (the model splices them in that order)."""
    out: dict = {}
    pixels = [p["pixel_values"] for p in prompts if p.get("pixel_values") is not None]
    if pixels:
        out["pixel_values"] = torch.cat(pixels)
    series = [s for p in prompts for s in (p.get("time_series") or [])]
    if series:
        out["time_series"] = series
        out["sampling_rates"] = [r for p in prompts for r in (p.get("sampling_rates") or [])]
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
        # the answer prior on the same items, graded by the task's own verifier (no data needed)
        env = env_class(task)(None)
        cases = [Case(c["id"], c["prompt"], c["reference"], c["meta"])
                 for c in {r["case"]["id"]: r["case"] for r in rs}.values()]
        prior, prior_answer = answer_prior(env, cases)
        results[task] = {"mean": mean, "stderr": se, "n_items": len(items), "n_samples": n_samples,
                         "prior": prior, "prior_answer": prior_answer, "above_prior": mean - prior,
                         "stderr_vs_prior": diff_stderr(mean, prior, len(items)),
                         f"pass@{n_samples}": pass_at_n,
                         "by_difficulty": {d: _mean(v) for d, v in sorted(by_diff.items())},
                         "sampling": first.get("sampling"), "template_hash": first.get("template_hash"),
                         "model": first.get("model", "")}
    # Macro mean: every task weighs the same, whatever its number of items.
    overall = _mean([v["mean"] for v in results.values()])
    return {"tasks": results, "macro_mean": overall}
