"""`opens1 rl`: online RL with verifiable rewards on OpenS1 environments.

CPU, one process (the speedrun's RL stage does the same from Python):
    opens1 rl --model runs/speedrun/model --envs logic/counting,bio/gc_content --minutes 5 --out runs/rl

Several GPUs on one node, FSDP2 trainer with a colocated rollout copy per rank:
    torchrun --nproc_per_node=8 -m opens1.rl.cli --model DIR --envs math/gsm8k --steps 600 --out runs/rl

Rollout workers on a Ray cluster (trainer in this process):
    opens1 rl --model DIR --envs math/gsm8k --ray-workers 4 --out runs/rl

Your own verifiable items (docs/your-data.md), alone or beside environments:
    opens1 rl --model DIR --data my_items.jsonl --envs logic/counting --steps 50 --out runs/rl

Writes OUT/metrics.jsonl (one line per step: reward per source, entropy, response length,
kept groups, losses), OUT/summary.json (held-out reward before and after) and OUT/model
(the trained policy, Intern-S1 HF layout, with its tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from opens1.cli.util import (HelpFormatter, UserError, add_list_argument, add_quiet_argument, check_dir, check_env_names,
                              progress)


def _train(trainer, args):
    """trainer.train(steps, max_seconds), one step at a time behind a progress bar."""
    budget = args.minutes * 60 if args.minutes else None
    t0 = time.perf_counter()
    with progress(args.steps, "rl", quiet=args.quiet, unit="step") as bar:
        for _ in range(args.steps):
            if budget is not None and time.perf_counter() - t0 > budget:
                break
            trainer.train(steps=1)
            bar.update(1)
            bar.set_postfix(reward=f"{trainer.result.history[-1]['reward_mean']:.3f}")
    return trainer.result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opens1 rl", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="model directory (save_pretrained layout)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: MODEL if it has one, else the bundled one)")
    add_list_argument(p, "--envs", help="environment names, comma or space separated (see `opens1 eval --list`)")
    p.add_argument("--data", nargs="+", default=[], metavar="PATH",
                   help="your verifiable-item files (.jsonl/.parquet, docs/your-data.md) and/or a data root in "
                        "the ../shared/data layout (default: the embedded subset)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget for training")
    p.add_argument("--algorithm", choices=["oreal", "grpo"], default="oreal")
    p.add_argument("--entropy-control", choices=["kl_cov", "clip_cov", "none"], default="kl_cov")
    p.add_argument("--kl-cov-ratio", type=float, default=0.2, help="share of tokens KL-Cov acts on (Intern-S1: k=0.2)")
    p.add_argument("--ref-kl-coef", type=float, default=0.0)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--heldout-items", type=int, default=64)
    p.add_argument("--rewards", default=None,
                   help="mixture-of-rewards config (JSON file: {\"sources\": {\"chem/*\": \"env\", ...}}); "
                        "default: every environment's own verifier")
    p.add_argument("--ray-workers", type=int, default=0, help="rollout workers on Ray (0: local engine)")
    p.add_argument("--seed", type=int, default=0)
    add_quiet_argument(p)
    return p


def _resolve_envs(args) -> tuple[list[str], str | None]:
    """(environment names, data root): --envs checked with suggestions, --data files registered."""
    from opens1.data.user import register_items, split_data_paths

    root, files = split_data_paths(args.data)
    check_env_names(args.envs)
    envs = list(args.envs) + [register_items(f) for f in files]  # rows checked before the model loads
    if not envs:
        raise UserError("give --envs NAME... and/or --data FILE... (your verifiable items)")
    return envs, root


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    envs, data_root = _resolve_envs(args)
    check_dir(args.model, "model directory")
    import torch

    import opens1
    from opens1.processing.processor import Processor
    from opens1.rl.algorithms import RLLossConfig
    from opens1.rl.trainer import RLConfig, RLTrainer

    torch.manual_seed(args.seed)
    model_dir = Path(args.model)
    tok_dir = args.tokenizer or (model_dir if (model_dir / "opens1_tokenizer.json").exists() else None)
    tok = opens1.load_tokenizer(tok_dir)
    model = opens1.load_model(model_dir, dtype=torch.float32)
    proc = Processor(tok, model.config)
    cfg = RLConfig(
        envs=envs, data_root=data_root, steps=args.steps,
        prompts_per_step=args.prompts_per_step, rollouts_per_prompt=args.rollouts,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, lr=args.lr,
        heldout_items=args.heldout_items, seed=args.seed,
        **({"rewards": json.loads(Path(args.rewards).read_text())} if args.rewards else {}),
        loss=RLLossConfig(algorithm=args.algorithm, entropy_control=args.entropy_control,
                          kl_cov_ratio=args.kl_cov_ratio, ref_kl_coef=args.ref_kl_coef),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = None
    if args.ray_workers:
        from opens1.rl.ray_layout import RayEngine

        engine = RayEngine(model, num_workers=args.ray_workers, pad_token_id=tok.pad_token_id)
    trainer = RLTrainer(model, tok, proc, cfg, engine=engine, log_path=out / "metrics.jsonl")
    rank = int(os.environ.get("RANK", "0"))
    before = trainer.heldout_reward()
    print(f"held-out reward before RL: {before.reward:.3f} on {before.items} items", file=sys.stderr)
    res = _train(trainer, args)
    after = trainer.heldout_reward(items=before.items)
    n, before, after = after.items, before.reward, after.reward
    print(f"held-out reward after RL:  {after:.3f} on {n} items ({res.steps} steps, {res.seconds:.0f}s)", file=sys.stderr)
    if rank == 0:
        summary = {"heldout_reward_before": before, "heldout_reward_after": after, "heldout_items": n,
                   "steps": res.steps, "seconds": res.seconds, "tokens": res.tokens,
                   "settings": {**vars(args), "envs": envs}}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        trainer.export(out / "model")
        tok.save_pretrained(out / "model")
    return 0


if __name__ == "__main__":
    from opens1.cli.util import run_main

    sys.exit(run_main(main, None, "opens1 rl"))
