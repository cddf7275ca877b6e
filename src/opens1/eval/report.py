"""Evaluation reports: results JSON and a Markdown table (mean ± standard error)."""

from __future__ import annotations

import json
from pathlib import Path

from opens1.common.atomic import atomic_write


def to_markdown(summary: dict) -> str:
    rows = ["| task | items | samples | mean | ± s.e. | pass@n | easy | medium | hard | answer prior | mean - prior |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, r in sorted(summary["tasks"].items()):
        n = r["n_samples"]
        d = r["by_difficulty"]
        cells = [f"{d[k]:.3f}" if k in d else "-" for k in ("easy", "medium", "hard")]
        prior = (f"{r['prior']:.3f} | {r['above_prior']:+.3f} ± {r['stderr_vs_prior']:.3f}"
                 if "prior" in r else "- | -")  # summaries written before the prior existed
        rows.append(f"| {task} | {r['n_items']} | {n} | {r['mean']:.3f} | {r['stderr']:.3f} | "
                    f"{r[f'pass@{n}']:.3f} | " + " | ".join(cells) + f" | {prior} |")
    rows.append(f"\nMacro mean over {len(summary['tasks'])} tasks: {summary['macro_mean']:.3f}")
    rows.append("Answer prior: the score of the best constant answer on the same items (a model that "
                "ignores its input reaches it); ± is the standard error of the difference.")
    first = next(iter(summary["tasks"].values()), None)
    if first:
        rows.append(f"Sampling: {json.dumps(first['sampling'])}; chat template {first['template_hash']}")
    return "\n".join(rows) + "\n"


def write_report(summary: dict, out_dir: str | Path, stem: str = "results") -> tuple[Path, Path]:
    out = Path(out_dir)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write(js, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write(md, to_markdown(summary))
    return js, md
