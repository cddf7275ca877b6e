"""The speedrun's settings: SpeedrunConfig, the stages and their shares of the wall-clock
budget (Clock), the stage presets' overrides, and the parsers of `--steps` and `--set`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from opens1.rl.algorithms import RLLossConfig
from opens1.rl.trainer import RLConfig
from opens1.speedrun.tasks import TASKS
from opens1.train.config import _coerce, apply_overrides, get_train_preset

STAGES = ["pretrain", "multimodal", "sft", "rl", "eval"]
# Share of the budget per stage; what is left is the final reserve (saving, report).
STAGE_SHARE = {"pretrain": 0.05, "multimodal": 0.06, "sft": 0.62, "rl": 0.24, "eval": 0.03}
# Pretraining text: prose and the notations the tasks use (protein is not among them).
PRETRAIN_SOURCES = "gsm8k,smiles,qm9,dna"
MULTIMODAL_SOURCES = "molecule_images:1,ecg:1,gsm8k:1,smiles:1"
# The speedrun's changes to the stage presets (train/config.py): SFT here trains a model
# that pretraining barely touched, so it starts at a pretraining-like rate, and every stage
# uses WSD, whose flat part lets the run re-plan its length from the measured step time.
STAGE_TRAIN = {"pretrain": dict(warmup_steps=20),
               # 2 rows a step: images make a step slow, and 8-row steps gave 8 steps in 54 s
               "multimodal": dict(schedule="wsd", warmup_steps=10, micro_batch_size=2),
               # no loss-spike guard: near-zero template losses make a 4x "spike" ordinary, and the
               # guard, skipping, never updated its average again (21 skips stopped a run)
               "sft": dict(schedule="wsd", lr=2e-3, min_lr=2e-4, warmup_steps=20, spike_factor=0.0)}
ENCODER_LR = 1e-3
ENCODER_WARMUP = 0.5  # of the multimodal stage's time: the time-series encoder's supervised warm-up
MIN_STEPS = 20  # a stage that ran fewer optimizer steps is flagged in the report
FIXED_STAGES = ("pretrain", "encoder", "multimodal", "sft", "rl")


@dataclass
class SpeedrunConfig:
    minutes: float = 30.0
    out: str = "runs/speedrun"
    data: str | None = None  # None: the embedded real subset
    preset: str = "tiny"
    seed: int = 0
    seq_len: int = 256
    micro_batch_size: int = 8
    eval_items: int = 400  # per task (fewer if a split is smaller or time runs out)
    rl_envs: list[str] = field(default_factory=list)  # empty: chosen after SFT
    threads: int = 0  # torch threads; 0: chosen by a start-up benchmark (pick_threads)
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    steps: dict[str, int] = field(default_factory=dict)  # fixed work per stage: no time budget
    sft_examples: int = 0  # per task; 0: scaled with the budget
    train: dict[str, dict] = field(default_factory=dict)  # stage -> TrainConfig overrides (probes)
    init_from: str | None = None  # a saved run's model directory to start from instead of random weights


class Clock:
    """The wall-clock budget, counted from `start` (a time.perf_counter() value: the process
    start for the command line). Stages ask for their share of what is left, so an early
    stage that finishes early hands its time to the later ones. A final reserve (saving
    the model and writing the report) is never handed out, so the run ends inside the budget."""

    def __init__(self, minutes: float, start: float | None = None):
        self.t0 = time.perf_counter() if start is None else start
        self.total = minutes * 60.0
        self.reserve = 6.0 + 0.02 * self.total

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return max(0.0, self.total - self.elapsed())

    def share(self, stage: str, remaining_stages: list[str]) -> float:
        """Seconds for `stage`: its share of the time left (less the final reserve), in
        proportion to the stages still to run."""
        todo = sum(STAGE_SHARE[s] for s in remaining_stages if s in STAGE_SHARE)
        return max(0.0, self.left() - self.reserve) * STAGE_SHARE[stage] / max(todo, 1e-9)


def parse_steps(spec: str) -> dict[str, int]:
    """"sft=3000,rl=200" -> {"sft": 3000, "rl": 200}; a bare number N means N SFT steps with
    the other stages in their time-share proportions."""
    spec = spec.strip()
    if not spec:
        return {}
    if spec.isdigit():
        n = int(spec)
        return {s: max(1, round(n * STAGE_SHARE[s] / STAGE_SHARE["sft"])) for s in ("pretrain", "multimodal", "rl")} | {"sft": n}
    out = {}
    for item in spec.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in FIXED_STAGES or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--steps: expected e.g. 'sft=3000,rl=200' ({', '.join(FIXED_STAGES)}), got {item!r}")
        out[name] = int(value)
    return out


def parse_sets(items: list[str]) -> dict[str, dict]:
    """["sft.lr=1e-3"] -> {"sft": {"lr": 0.001}}, typed and checked by TrainConfig."""
    out: dict[str, dict] = {}
    for item in items:
        stage, dot, pair = item.partition(".")
        if not dot or stage not in ("pretrain", "multimodal", "sft", "rl"):
            raise ValueError(f"--set: expected STAGE.KEY=VALUE with STAGE pretrain, multimodal, sft or rl, got {item!r}")
        key = pair.partition("=")[0].strip()
        if stage == "rl":
            value = _rl_setting(key, pair.partition("=")[2].strip())
        else:
            value = getattr(apply_overrides(get_train_preset(stage), [pair]), key)
        out.setdefault(stage, {})[key] = value
    return out


def _rl_setting(key: str, value: str):
    """A typed value for an RLConfig or RLLossConfig field (the loss's fields by their own name)."""
    for cls in (RLConfig, RLLossConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key in fields and key not in ("loss", "envs", "rewards", "betas"):
            return _coerce(value, fields[key].type)
    raise ValueError(f"--set rl.{key}: not a field of RLConfig or RLLossConfig")
