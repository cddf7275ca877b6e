"""One evaluation run end to end, as `opens1 eval` does it (the command parses its flags and
calls these):

    backend, name = make_backend(model="ckpt/s1-tiny")        # or endpoint="http://.../v1"
    summary = evaluate(backend, ["logic/sorting"], out="runs/eval", n_items=10, model_name=name)
    summary = rescore_file("runs/eval/generations.jsonl", out="runs/eval")

`evaluate` saves generations.jsonl after every task (a crash loses at most one task's
generations), then results.json and results.md; `rescore_file` re-grades saved generations
with the current verifiers and writes generations.rescored.jsonl and results.rescored.*.
"""

from __future__ import annotations

from pathlib import Path

from opens1.common.errors import missing_extra
from opens1.common.progress import progress
from opens1.data.user import iter_rows, register_items
from opens1.envs import get_env, list_envs
from opens1.eval.backends import EVAL_SAMPLING, EndpointBackend, LocalBackend
from opens1.eval.harness import generate_records, rescore_records, summarize, write_jsonl_atomic
from opens1.eval.report import write_report
from opens1.infer.sampling import SamplingParams


def read_generations(path: str | Path) -> list[dict]:
    """The records of a saved generations.jsonl; a malformed line stops with file:line."""
    return [row for _, row in iter_rows(path)]


def rescore_file(path: str | Path, *, out: str | Path) -> dict:
    """Re-grade a saved generations file; returns the summary (also written under `out`)."""
    records = read_generations(path)
    known = set(list_envs())
    for task in {r.get("task") for r in records} - known:  # your items: the verifier is in each case
        register_items(None, name=task)
    records = rescore_records(records)
    out = Path(out)
    write_jsonl_atomic(out / "generations.rescored.jsonl", records)
    summary = summarize(records)
    summary["settings"] = {"rescore": str(path)}
    write_report(summary, out, "results.rescored")
    return summary


def make_backend(*, model: str | None = None, endpoint: str | None = None, api_model: str | None = None,
                 api_key: str = "EMPTY", device: str | None = None):
    """(backend, model name): an OpenAI-compatible endpoint, or a local checkpoint directory."""
    if endpoint:
        try:
            backend = EndpointBackend(endpoint, api_model, api_key)
        except ModuleNotFoundError as e:
            raise missing_extra(e, "opens1 eval --endpoint") from e
        return backend, backend.model
    return LocalBackend(model, device=device), str(model)


class ProgressBackend:
    """A backend wrapper that advances a progress bar by the samples each call returns."""

    def __init__(self, backend, bar):
        self.backend, self.bar = backend, bar
        self.template_hash = backend.template_hash

    def generate(self, conversations, n, *a, **kw):
        out = self.backend.generate(conversations, n, *a, **kw)
        self.bar.update(len(conversations) * n)
        return out


def evaluate(backend, tasks: list[str], *, out: str | Path, n_items: int, n_samples: int = 1,
             sampling: SamplingParams = EVAL_SAMPLING, split: str | dict[str, str] = "heldout",
             difficulty: str | None = None, data_root=None, batch_size: int = 8, model_name: str = "",
             enable_thinking: bool = True, settings: dict | None = None, quiet: bool = False) -> dict:
    """Generate, grade and report `tasks`; `split` is one split or one per task. Returns the
    summary (with `settings` under "settings"), written to `out` as results.json / results.md."""
    out = Path(out)
    splits = split if isinstance(split, dict) else {t: split for t in tasks}
    sizes = {t: min(n_items, get_env(t, data_root).num_cases(splits[t], difficulty)) for t in tasks}
    records: list[dict] = []
    with progress(sum(sizes.values()) * n_samples, "eval", quiet=quiet, unit="sample") as bar:
        for task in tasks:  # save after every task: a crash loses at most one task's generations
            bar.set_postfix_str(task)
            records += generate_records(ProgressBackend(backend, bar), [task], n_items=n_items, n_samples=n_samples,
                                        sampling=sampling, split=splits[task], difficulty=difficulty,
                                        data_root=data_root, batch_size=batch_size, model_name=model_name,
                                        enable_thinking=enable_thinking)
            write_jsonl_atomic(out / "generations.jsonl", records)
    summary = summarize(records)
    summary["settings"] = settings or {}
    write_report(summary, out)
    return summary
