"""Held-out evaluation: greedy scores per task beside the answer prior (the best constant
answer) with the standard error of the difference, and the answer's cross-entropy against
the answers' entropy."""

from __future__ import annotations

import time

import torch

from opens1.envs import get_env
from opens1.eval.harness import answer_cross_entropy, answer_entropy, answer_prior, diff_stderr
from opens1.infer.batch import is_multimodal
from opens1.infer.sampling import SamplingParams
from opens1.rl.rollout import LocalEngine, response_text
from opens1.speedrun.runtime import log

BATCH = 32  # held-out items decoded together
GREEDY_SHARE, CE_SHARE = 0.85, 0.15  # of a task's time: greedy scores, then the cross-entropy pass


def greedy_texts(engine, tok, prompts: list[dict], sampling) -> list[str]:
    """One response text per prompt. Multimodal prompts of equal length (a task's series or
    image prompts share one template) are stacked into one batch, with their series and
    images in row order, instead of running one at a time."""
    out: list[str | None] = [None] * len(prompts)
    text = [i for i, p in enumerate(prompts) if not is_multimodal(p)]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if is_multimodal(p):
            groups.setdefault(p["input_ids"].shape[1], []).append(i)
    jobs = [([prompts[i] for i in text], text)] if text else []
    jobs += [([_stack([prompts[i] for i in idx])], idx) for idx in groups.values()]
    for batch, idx in jobs:
        gens = engine.generate(batch, 1, sampling, seed=0)
        rows = [g[0] for g in gens] if len(batch) == len(idx) else gens[0]  # a merged prompt: one row each
        for i, r in zip(idx, rows):
            out[i] = response_text(tok, r)
    return out


def _stack(prompts: list[dict]) -> dict:
    """Equal-length multimodal prompts as one prompt of several rows."""
    merged = {"input_ids": torch.cat([p["input_ids"] for p in prompts])}  # [B, T]
    pixels = [p["pixel_values"] for p in prompts if p.get("pixel_values") is not None]
    if pixels:
        merged["pixel_values"] = torch.cat(pixels)
    series = [s for p in prompts for s in (p.get("time_series") or [])]
    if series:
        merged["time_series"] = series
        merged["sampling_rates"] = [r for p in prompts for r in (p.get("sampling_rates") or [])]
    return merged


def evaluate(model, tok, proc, tasks: list[str], *, items: int, seconds: float, data,
             timed: bool = True, label: str = "eval") -> dict:
    """Per task on its held-out split: the greedy score, the answer prior (best constant
    answer) on the same items with the difference and its standard error, and the answer
    cross-entropy against the answer entropy. Tasks share `seconds` (a task stops between
    batches when its share is spent, and reports how many items it scored)."""
    engine = LocalEngine(model, pad_token_id=tok.pad_token_id, share=True)
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=(tok.eos_token_id,), vocab_limit=len(tok))
    deadline = time.perf_counter() + seconds
    out = {}
    for k, task in enumerate(tasks):
        env = get_env(task, data_root=data)
        share = (deadline - time.perf_counter()) / (len(tasks) - k)
        task_deadline = time.perf_counter() + GREEDY_SHARE * share
        cases = env.cases(items, "heldout")
        scores: list[float] = []
        for start in range(0, len(cases), BATCH):
            # every task gets at least one batch while the stage has time; then its own share
            now = time.perf_counter()
            if timed and (now >= deadline or (scores and now >= task_deadline)):
                break
            batch = cases[start:start + BATCH]
            texts = greedy_texts(engine, tok, [proc(c.messages(), enable_thinking=False) for c in batch], greedy)
            scores += [float(env.verify(t, c).score) for c, t in zip(batch, texts)]
        if not scores:
            continue
        ce_deadline = time.perf_counter() + CE_SHARE * share if timed else None
        out[task] = _task_entry(model, tok, proc, env, cases=cases, scores=scores, ce_deadline=ce_deadline)
        r = out[task]
        log(f"{label} {task}: {r['score']:.3f} on {len(scores)} items, prior {r['prior']:.3f} ({r['prior_answer']!r}), "
            f"{r['above_prior']:+.3f} +- {r['stderr']:.3f}; answer {r['answer_ce_bits']:.2f} bits vs entropy "
            f"{r['answer_entropy_bits']:.2f}")
    return out


def _task_entry(model, tok, proc, env, *, cases: list, scores: list[float], ce_deadline: float | None) -> dict:
    """A task's report entry from its greedy scores on the first len(scores) of `cases`."""
    scored = cases[:len(scores)]
    a = sum(scores) / len(scores)
    prior, prior_answer = answer_prior(env, scored)
    ce, ce_items = answer_cross_entropy(model, tok, proc, env, scored, deadline=ce_deadline)
    return {"score": a, "items": len(scores), "asked_items": len(cases), "prior": prior,
            "prior_answer": prior_answer, "above_prior": a - prior,
            "stderr": diff_stderr(a, prior, len(scores)),
            "answer_ce_bits": ce, "answer_entropy_bits": answer_entropy(scored), "ce_items": ce_items}
