"""The speedrun: a tiny Intern-S1 trained end to end from real data on a CPU, with a report
(`opens1 speedrun`, src/opens1/cli/speedrun.py, describes the stages and the command line).

    from opens1.speedrun import SpeedrunConfig, run
    report = run(SpeedrunConfig(minutes=3, out="runs/speedrun"))

One module per concern:

    config.py      SpeedrunConfig, the stages and their budget shares (Clock), --steps and --set parsing
    tasks.py       the tasks and their SFT chats
    model.py       the tiny tokenizer (bundled or trained) and the model
    stages.py      the supervised stages and the time-series encoder's warm-up
    evaluation.py  held-out greedy scores beside the answer prior
    rl.py          RL's task choice, recipe and loop
    pipeline.py    run(): the stages in order, the warnings, the saved model
    report.py      report.md with its plots, and report.json
    runtime.py     process start, threads, git revision, log lines
"""

from opens1.speedrun.config import (ENCODER_LR, ENCODER_WARMUP, FIXED_STAGES, MIN_STEPS, MULTIMODAL_SOURCES,
                                    PRETRAIN_SOURCES, STAGE_SHARE, STAGE_TRAIN, STAGES, Clock, SpeedrunConfig,
                                    parse_sets, parse_steps)
from opens1.speedrun.evaluation import evaluate, greedy_texts
from opens1.speedrun.model import (TINY_TOKENIZER, build_model, load_or_train_tokenizer, tokenizer_corpus,
                                   train_tiny_tokenizer)
from opens1.speedrun.pipeline import run
from opens1.speedrun.report import to_markdown, write_json, write_report
from opens1.speedrun.rl import (RL_CEILING, RL_FLOOR, RL_SETTINGS, choose_rl_envs, rl_configs, rl_heldout_items,
                                rl_loop, run_rl)
from opens1.speedrun.runtime import git_revision, log, pick_threads, process_age
from opens1.speedrun.stages import StepLog, run_train_stage, warm_up_series_encoder
from opens1.speedrun.tasks import TASKS, sft_samples

__all__ = [
    "Clock", "ENCODER_LR", "ENCODER_WARMUP", "FIXED_STAGES", "MIN_STEPS", "MULTIMODAL_SOURCES", "PRETRAIN_SOURCES",
    "RL_CEILING", "RL_FLOOR", "RL_SETTINGS", "STAGES", "STAGE_SHARE", "STAGE_TRAIN", "SpeedrunConfig", "StepLog",
    "TASKS", "TINY_TOKENIZER", "build_model", "choose_rl_envs", "evaluate", "git_revision", "greedy_texts",
    "load_or_train_tokenizer", "log", "parse_sets", "parse_steps", "pick_threads", "process_age", "rl_configs",
    "rl_heldout_items", "rl_loop", "run", "run_rl", "run_train_stage", "sft_samples", "to_markdown",
    "tokenizer_corpus", "train_tiny_tokenizer", "warm_up_series_encoder", "write_json", "write_report",
]
