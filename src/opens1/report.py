"""The speedrun's report card: OUT/report.md with PNG plots (loss per stage, RL reward and
entropy, held-out scores per task). report.json is written by the speedrun itself."""

from __future__ import annotations

from pathlib import Path


def _plot_losses(report: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {k: v for k, v in report["stages"].items() if k != "rl" and v.get("loss")}
    if not stages:
        return False
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for ax, (name, st) in zip(axes[0], stages.items()):
        ax.plot(range(1, len(st["loss"]) + 1), st["loss"])
        ax.set_title(f"{name} ({st['steps']} steps)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_rl(rl: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if not rl.get("reward"):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(rl["reward"])
    axes[0].set_title("RL: mean rollout reward")
    if rl.get("entropy"):
        axes[1].plot(rl["entropy"])
    axes[1].set_title("RL: token entropy")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_eval(ev: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if not ev:
        return False
    names = list(ev)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names)), 3.5))
    ax.bar(range(len(names)), [ev[n]["score"] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out score (greedy)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def to_markdown(report: dict, images: list[str]) -> str:
    m = report["model"]
    lines = [
        "# OpenS1 speedrun report", "",
        f"Model `{m['preset']}`: {m['parameters'] / 1e6:.2f}M parameters (vocabulary {m['vocab_size']}), "
        f"trained in {report['wall_seconds'] / 60:.1f} minutes of a {report['config']['minutes']:g}-minute budget "
        f"on {report['machine']['cpus']} CPU cores (torch {report['machine']['torch']}); "
        f"git revision `{report.get('git_revision') or 'unknown'}`; data "
        f"`{report['config']['data'] or 'embedded real subset'}`.", "",
        "## Stages", "", "| stage | steps | tokens | seconds | first loss | last loss |", "|---|---|---|---|---|---|",
    ]
    for name, st in report["stages"].items():
        loss = st.get("loss") or [float("nan")]
        lines.append(f"| {name} | {st['steps']} | {st['tokens']:,} | {st['seconds']:.0f} | {loss[0]:.3f} | {loss[-1]:.3f} |")
    rl = report["stages"].get("rl")
    if rl:
        lines += ["", f"RL on {', '.join(rl['envs'])}: held-out reward {rl['heldout_reward_before']:.3f} -> "
                      f"{rl['heldout_reward_after']:.3f} on {rl['heldout_items']} items "
                      f"(standard error of the difference {rl['stderr_of_difference']:.3f}), greedy decoding."]
        if "heldout_sampled_before" in rl:
            lines += ["", f"Sampled (temperature 1, one fixed-seed sample per item): {rl['heldout_sampled_before']:.3f} -> "
                          f"{rl['heldout_sampled_after']:.3f} (standard error of the difference "
                          f"{rl['stderr_of_difference_sampled']:.3f})."]
        if "heldout_answer_prior" in rl:
            lines += ["", f"Answer prior (always each environment's most common held-out answer, same items): "
                          f"{rl['heldout_answer_prior']:.3f}. A policy that only learned which answer is most "
                          f"frequent scores this."]
        before, after = rl.get("heldout_by_env_before") or {}, rl.get("heldout_by_env_after") or {}
        prior = rl.get("heldout_answer_prior_by_env") or {}
        if before and after:
            lines += ["", "| RL environment | greedy before | after | answer prior | items |", "|---|---|---|---|---|"]
            lines += [f"| {e} | {before[e]['reward']:.3f} | {after[e]['reward']:.3f} | "
                      f"{prior[e]['reward']:.3f} | {before[e]['items']} |" if e in prior else
                      f"| {e} | {before[e]['reward']:.3f} | {after[e]['reward']:.3f} | - | {before[e]['items']} |"
                      for e in before if e in after]
    lines += ["", "## Held-out evaluation (greedy)", "", "| task | score | items |", "|---|---|---|"]
    for task, r in report.get("eval", {}).items():
        lines.append(f"| {task} | {r['score']:.3f} | {r['items']} |")
    lines += [""] + [f"![{img}]({img})" for img in images] + [""]
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> Path:
    out = Path(out)
    images = []
    if _plot_losses(report, out / "loss.png"):
        images.append("loss.png")
    if report["stages"].get("rl") and _plot_rl(report["stages"]["rl"], out / "rl.png"):
        images.append("rl.png")
    if _plot_eval(report.get("eval", {}), out / "eval.png"):
        images.append("eval.png")
    tmp = out / "report.md.tmp"
    tmp.write_text(to_markdown(report, images))
    tmp.replace(out / "report.md")
    return out / "report.md"
