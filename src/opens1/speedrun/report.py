"""The speedrun's report card: OUT/report.md with PNG plots (loss per stage, RL reward and
entropy, held-out scores beside their answer priors), and OUT/report.json, the dict the
run builds. Both are written atomically: a reader never sees half a report."""

from __future__ import annotations

import json
from pathlib import Path

from opens1.common.atomic import atomic_write


def load_plotting() -> None:
    """Imports matplotlib with its file-only backend. The run calls this at its start, so that
    the final reserve it keeps for the report does not pay for the import."""
    import matplotlib  # optional: matplotlib

    matplotlib.use("Agg")


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator  # optional: matplotlib

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def _save(fig, path: Path) -> bool:
    import matplotlib.pyplot as plt  # optional: matplotlib

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)  # figures are global state in pyplot: a long-lived process would leak them
    return True


def _plot_losses(report: dict, path: Path) -> bool:
    load_plotting()
    import matplotlib.pyplot as plt  # optional: matplotlib

    stages = {k: v for k, v in report["stages"].items() if k != "rl" and v.get("loss")}
    if not stages:
        return False
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for ax, (name, st) in zip(axes[0], stages.items()):
        ax.plot(range(1, len(st["loss"]) + 1), st["loss"])
        ax.set_title(f"{name} ({st['steps']} steps)")
        ax.set_ylabel("loss")
        low, high = min(st["loss"]), max(st["loss"])
        if low > 0 and high / low > 30:  # SFT falls to ~0.01: a linear axis shows only its first steps
            ax.set_yscale("log")
            ax.set_ylabel("loss (log scale)")
        _integer_steps(ax)
    return _save(fig, path)


def _plot_rl(rl: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt  # optional: matplotlib

    if not rl.get("reward"):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(range(1, len(rl["reward"]) + 1), rl["reward"])
    axes[0].set_title("RL: mean rollout reward")
    if rl.get("entropy"):
        axes[1].plot(range(1, len(rl["entropy"]) + 1), rl["entropy"])
    axes[1].set_title("RL: token entropy")
    for ax in axes:
        _integer_steps(ax)
    return _save(fig, path)


def _plot_eval(ev: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt  # optional: matplotlib

    if not ev:
        return False
    names = list(ev)
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 3.5))
    ax.bar([i - 0.2 for i in x], [ev[n]["score"] for n in names], width=0.4, label="model (greedy)")
    ax.bar([i + 0.2 for i in x], [ev[n].get("prior", 0.0) for n in names], width=0.4, color="0.7",
           label="answer prior (best constant answer)")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out score")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return _save(fig, path)


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"  # x != x: NaN


def _stage_rows(report: dict) -> list[str]:
    rows = ["| stage | steps | tokens | seconds | first loss | last loss |", "|---|---|---|---|---|---|"]
    for name, st in report["stages"].items():
        loss = st.get("loss") or [float("nan")]
        rows.append(f"| {name} | {st['steps']} | {st.get('tokens', 0):,} | {st['seconds']:.0f} | "
                    f"{_fmt(loss[0])} | {_fmt(loss[-1])} |")
    return rows


def _eval_rows(ev: dict) -> list[str]:
    rows = ["| task | score | answer prior | score - prior (± SE) | items | answer bits | prior entropy bits |",
            "|---|---|---|---|---|---|---|"]
    for task, r in ev.items():
        diff = f"{r['above_prior']:+.3f} ± {r['stderr']:.3f}" if "above_prior" in r else "-"
        rows.append(f"| {task} | {r['score']:.3f} | {_fmt(r.get('prior'))} ({r.get('prior_answer') or '-'}) | {diff} | "
                    f"{r['items']} | {_fmt(r.get('answer_ce_bits'), 2)} | {_fmt(r.get('answer_entropy_bits'), 2)} |")
    return rows


def _rl_lines(rl: dict) -> list[str]:
    lines = ["", "## RL", "",
             f"RL on {', '.join(rl['envs'])}, {rl['steps']} steps: held-out reward (greedy) "
             f"{rl['heldout_reward_before']:.3f} -> {rl['heldout_reward_after']:.3f} on {rl['heldout_items']} items "
             f"(standard error of the difference {rl['stderr_of_difference']:.3f}); the answer prior (each task's "
             f"best constant answer, same items) scores {rl.get('heldout_answer_prior', float('nan')):.3f}."]
    if "heldout_sampled_before" in rl:
        lines += ["", f"Sampled (temperature 1, one fixed-seed sample per item): {rl['heldout_sampled_before']:.3f} -> "
                      f"{rl['heldout_sampled_after']:.3f} (standard error of the difference "
                      f"{rl['stderr_of_difference_sampled']:.3f})."]
    by_env = rl.get("heldout_by_env") or {}
    if by_env:
        lines += ["", "| RL environment | greedy before | after | answer prior | items |", "|---|---|---|---|---|"]
        lines += [f"| {e} | {_fmt(v.get('before'))} | {_fmt(v.get('after'))} | {_fmt(v.get('prior'))} | {v.get('items')} |"
                  for e, v in by_env.items()]
    return lines


def to_markdown(report: dict, images: list[str]) -> str:
    m = report["model"]
    cfg = report["config"]
    budget = ("fixed work: " + ", ".join(f"{k} {v} steps" for k, v in cfg["steps"].items())) if cfg.get("steps") \
        else f"a {cfg['minutes']:g}-minute budget"
    active = f", {m['active_parameters'] / 1e6:.2f}M active per token" if "active_parameters" in m else ""
    vocab = (f"tokenizer {m['tokenizer_size']:,} ids in {m['vocab_size']:,} embedding rows"
             + (", tied to the output head" if m.get("tied_embeddings") else "")) if "tokenizer_size" in m \
        else f"vocabulary {m['vocab_size']}"
    load = report["machine"].get("load_average")
    lines = [
        "# OpenS1 speedrun report", "",
        f"Model `{m['preset']}`: {m['parameters'] / 1e6:.2f}M parameters{active} ({vocab}), "
        f"trained in {report['wall_seconds'] / 60:.1f} minutes of {budget} "
        f"on {report['machine']['cpus']} CPU cores, {report['machine']['torch_threads']} torch threads "
        f"(torch {report['machine']['torch']}"
        + (f"; load average {load[0]:.1f} at the start" if load else "") + "); seed "
        f"{cfg.get('seed', 0)}; git revision `{report.get('git_revision') or 'unknown'}`; data "
        f"`{cfg['data'] or 'embedded real subset'}`.", "",
    ]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    ev = report.get("eval", {})
    lines += ["## Held-out evaluation (greedy)", "",
              "Each score stands beside its answer prior: the score of the best constant answer on the same "
              "items (a model that ignores its input reaches it). Standard error of the difference: "
              "sqrt((a(1-a) + p(1-p)) / n). Answer bits: -log2 p(gold answer | prompt) under the model, "
              "teacher-forced, averaged over items; prior entropy: the entropy of the items' answers, what the "
              "best input-ignoring guess spends.", ""]
    lines += _eval_rows(ev) if ev else ["No task was evaluated."]
    lines += ["", "## Stages", ""] + _stage_rows(report)
    if report["stages"].get("rl"):
        lines += _rl_lines(report["stages"]["rl"])
    elif report.get("rl_skipped"):
        lines += ["", f"RL was skipped: {report['rl_skipped']}"]
    lines += [""] + [f"![{img}]({img})" for img in images] + [""]
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> Path:
    """OUT/report.md and its plots; returns the report's path."""
    out = Path(out)
    images = []
    if _plot_losses(report, out / "loss.png"):
        images.append("loss.png")
    if report["stages"].get("rl") and _plot_rl(report["stages"]["rl"], out / "rl.png"):
        images.append("rl.png")
    if _plot_eval(report.get("eval", {}), out / "eval.png"):
        images.append("eval.png")
    return atomic_write(out / "report.md", to_markdown(report, images))


def write_json(report: dict, out: str | Path) -> Path:
    """OUT/report.json: the whole report dict, indented."""
    return atomic_write(Path(out) / "report.json", json.dumps(report, indent=2))
