"""`opens1 speedrun`: a tiny Intern-S1 trained end to end from real data on a CPU, with a report.

    opens1 speedrun                          # ~30 minutes on 2 CPU cores, embedded real data
    opens1 speedrun --minutes 3              # smoke test
    opens1 speedrun --steps sft=3000,rl=200  # fixed work instead of a time budget (reproducible)
    opens1 speedrun --tasks chem/ring_count --stages sft,eval --minutes 2   # a one-task probe
    opens1 speedrun --data ../shared/data    # the full real data set, same layout
    opens1 speedrun --build-tokenizer src/opens1/tokenizer/assets/tiny --data ../shared/data

Stages, each with a share of the wall-clock budget (measured from process start; every
stage stops on time, evaluation included, and the report is written inside the budget):

    tokenizer   the `tiny` preset's own small tokenizer (assets/tiny: a 1,024-token byte-level
                BPE for prose, one token per character for SMILES and DNA), so that the
                embedding is a small part of the model and a ring-closure digit or a base is
                a token of its own; trained into OUT/tokenizer when missing
    model       the `tiny` preset: a 4-layer MoE decoder (8 experts, top-2) with tied
                embeddings, an InternViT tower and the time-series tower
    pretrain    text: GSM8K prose, SMILES, QM9 property sentences, DNA (a short stage)
    multimodal  RDKit molecule drawings, MIT-BIH ECG windows, text (a short stage)
    sft         the speedrun tasks from `opens1.envs` (loss on the answer only), in the same
                chat format evaluation and RL use (no thinking system prompt)
    rl          OREAL + KL-Cov on the tasks where the SFT model already beats the answer prior
    eval        greedy decoding on each task's held-out split, beside its answer prior (the
                best constant answer) and the answer's cross-entropy against the prior's entropy
    report      OUT/report.md with PNG plots, OUT/report.json, OUT/model (load_model,
                load_tokenizer and `opens1 serve` read it)
"""

from __future__ import annotations

import argparse
import sys
import time

from opens1.cli.util import HelpFormatter, add_list_argument, check_dir
from opens1.envs import check_env_names
from opens1.speedrun import (STAGES, TASKS, SpeedrunConfig, parse_sets, parse_steps, process_age, run,
                             train_tiny_tokenizer)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opens1 speedrun", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget from process start, report included")
    p.add_argument("--steps", default="", help="fixed work instead of a budget: 'sft=3000,rl=200' or N (SFT steps)")
    p.add_argument("--out", default="runs/speedrun")
    p.add_argument("--data", default=None, help="data root in the ../shared/data layout (default: embedded subset)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: all cores, or 1 where a start-up benchmark finds the cores busy)")
    p.add_argument("--eval-items", type=int, default=400, help="held-out items per task")
    add_list_argument(p, "--tasks", default=TASKS, help="environments to train and evaluate, comma or space separated")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run, in order: " + ",".join(STAGES))
    p.add_argument("--sft-examples", type=int, default=0, help="SFT examples per task (default: scaled with the budget)")
    add_list_argument(p, "--rl-envs", help="RL environments, comma or space separated (default: chosen after SFT)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a stage's training setting, e.g. sft.lr=1e-3 (repeatable)")
    p.add_argument("--init-from", metavar="DIR", help="start from a saved run's model (OUT/model) instead of random weights")
    p.add_argument("--build-tokenizer", metavar="DIR", help="train the tiny preset's tokenizer into DIR and exit")
    return p


def config_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> SpeedrunConfig:
    """The run's SpeedrunConfig; a typo in a task, a stage or a setting stops here, not after pretraining."""
    check_env_names(args.tasks)
    check_env_names(args.rl_envs)
    if args.data is not None:
        check_dir(args.data, "data root")
    try:
        steps = parse_steps(args.steps)
        train = parse_sets(args.set)
    except ValueError as e:
        p.error(str(e))
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stages {bad}; choose from {STAGES}")
    return SpeedrunConfig(minutes=args.minutes, out=args.out, data=args.data, preset=args.preset, seed=args.seed,
                          eval_items=args.eval_items, rl_envs=list(args.rl_envs),
                          threads=args.threads, tasks=list(args.tasks), stages=stages,
                          steps=steps, sft_examples=args.sft_examples, train=train, init_from=args.init_from)


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter() - process_age()
    p = build_parser()
    args = p.parse_args(argv)
    if args.build_tokenizer:
        train_tiny_tokenizer(args.build_tokenizer, args.data)
        return 0
    if args.minutes <= 0:
        p.error("--minutes must be positive")
    scfg = config_from_args(p, args)
    run(scfg, start=None if scfg.steps else start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
