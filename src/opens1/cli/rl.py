"""`opens1 rl`: online RL with verifiable rewards on OpenS1 environments.

CPU, one process (the speedrun's RL stage does the same from Python):
    opens1 rl --model runs/speedrun/model --envs logic/counting,bio/gc_content --minutes 5 --out runs/rl

Several GPUs on one node, FSDP2 trainer with a colocated rollout copy per rank:
    torchrun --nproc_per_node=8 -m opens1.cli.rl --model DIR --envs math/gsm8k --steps 600 --out runs/rl

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
from pathlib import Path

import torch

from opens1.cli.util import HelpFormatter, add_list_argument, add_quiet_argument, check_dir, run_main
from opens1.rl.algorithms import RLLossConfig
from opens1.rl.ray_layout import RayEngine
from opens1.rl.run import load_policy, resolve_envs, train_steps, write_outputs
from opens1.rl.trainer import RLConfig, RLTrainer


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    envs, data_root = resolve_envs(args.envs, args.data)
    check_dir(args.model, "model directory")
    torch.manual_seed(args.seed)
    tok, model, proc = load_policy(args.model, args.tokenizer)
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
    engine = RayEngine(model, num_workers=args.ray_workers, pad_token_id=tok.pad_token_id) if args.ray_workers else None
    trainer = RLTrainer(model, tok, proc, cfg, engine=engine, log_path=out / "metrics.jsonl")
    rank = int(os.environ.get("RANK", "0"))
    before = trainer.heldout_reward()
    print(f"held-out reward before RL: {before.reward:.3f} on {before.items} items", file=sys.stderr)
    res = train_steps(trainer, steps=args.steps, minutes=args.minutes, quiet=args.quiet)
    after = trainer.heldout_reward(items=before.items)
    print(f"held-out reward after RL:  {after.reward:.3f} on {after.items} items ({res.steps} steps, "
          f"{res.seconds:.0f}s)", file=sys.stderr)
    if rank == 0:
        summary = {"heldout_reward_before": before.reward, "heldout_reward_after": after.reward,
                   "heldout_items": after.items, "steps": res.steps, "seconds": res.seconds, "tokens": res.tokens,
                   "settings": {**vars(args), "envs": envs}}
        write_outputs(trainer, tok, out=out, summary=summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None, "opens1 rl"))
