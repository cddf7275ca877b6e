"""The pieces of one RL run as `opens1 rl` puts them together (opens1/cli/rl.py parses the
flags and calls these; the speedrun's RL stage uses RLTrainer directly):

    envs, root = resolve_envs(["logic/counting"], ["my_items.jsonl"])
    tok, model, proc = load_policy("runs/speedrun/model")
    trainer = RLTrainer(model, tok, proc, RLConfig(envs=envs, data_root=root))
    result = train_steps(trainer, steps=100, minutes=5)
    write_outputs(trainer, tok, out="runs/rl", summary={...})
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from opens1.common.errors import UserError
from opens1.common.progress import progress
from opens1.data.user import register_items, split_data_paths
from opens1.envs import check_env_names
from opens1.models.checkpoint import load_model
from opens1.processing.processor import Processor
from opens1.rl.trainer import RLResult, RLTrainer
from opens1.tokenizer import load_tokenizer


def resolve_envs(envs: list[str], data: list[str]) -> tuple[list[str], str | None]:
    """(environment names, data root): names checked with suggestions; `data` holds at most
    one data root folder and your item files, each registered as an environment (its rows
    are checked now, before any model loads)."""
    root, files = split_data_paths(data)
    check_env_names(envs)
    names = list(envs) + [register_items(f) for f in files]
    if not names:
        raise UserError("give --envs NAME... and/or --data FILE... (your verifiable items)")
    return names, root


def load_policy(model_dir: str | Path, tokenizer_dir: str | Path | None = None):
    """(tokenizer, float32 model, processor); the tokenizer is `tokenizer_dir`, else the
    model directory's own when it has one, else the bundled one."""
    model_dir = Path(model_dir)
    tok_dir = tokenizer_dir or (model_dir if (model_dir / "opens1_tokenizer.json").exists() else None)
    tok = load_tokenizer(tok_dir)
    model = load_model(model_dir, dtype=torch.float32)
    return tok, model, Processor(tok, model.config)


def train_steps(trainer: RLTrainer, *, steps: int, minutes: float | None = None, quiet: bool = False) -> RLResult:
    """`trainer.train`, one step at a time behind a progress bar, within `minutes` if given."""
    budget = minutes * 60 if minutes else None
    t0 = time.perf_counter()
    with progress(steps, "rl", quiet=quiet, unit="step") as bar:
        for _ in range(steps):
            if budget is not None and time.perf_counter() - t0 > budget:
                break
            trainer.train(steps=1)
            bar.update(1)
            bar.set_postfix(reward=f"{trainer.result.history[-1]['reward_mean']:.3f}")
    return trainer.result


def write_outputs(trainer: RLTrainer, tokenizer, *, out: str | Path, summary: dict) -> None:
    """OUT/summary.json and OUT/model (the trained policy with its tokenizer)."""
    out = Path(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    trainer.export(out / "model")
    tokenizer.save_pretrained(out / "model")
