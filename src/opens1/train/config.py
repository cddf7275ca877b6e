"""Typed training configuration: `TrainConfig`, stage presets and `key=value` overrides.

One flat dataclass (not nested) so that every field is addressable from the command
line as `--set lr=1e-3` and so that the config recorded in a checkpoint is one JSON
object that can be compared field by field when a run is resumed.

Stage presets follow Intern-S1's recipe (Intern-S1 report, training stages; docs/training.md):
    pretrain     text continued pretraining: prose, LaTeX, SMILES, reactions, FASTA, DNA;
                 loss on every token, WSD schedule, batch-size warm-up
    multimodal   image-text (+ time series) pretraining on all parameters, loss on text
                 tokens only, square-averaged per-sample weights (w = l^-1/2)
    sft          chat-formatted task data through the processor, loss on assistant tokens
The numbers are sized for the `tiny` model presets on a CPU; a cluster run overrides them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

STAGES = ("pretrain", "multimodal", "sft")
LOSS_REDUCTIONS = ("token", "square", "sample")
FREEZABLE = ("vision", "projector", "router", "timeseries", "embeddings", "language")


@dataclass
class TrainConfig:
    # -- what is trained
    stage: str = "pretrain"
    model: str = "tiny"  # a preset name (opens1.config.get_preset)
    init_from: str | None = None  # a checkpoint directory read with opens1.load_model
    # -- data
    data_root: str | None = None  # None: the embedded real subset
    sources: str = "gsm8k,latex,smiles,qm9,reactions,protein,dna"  # name[:weight],...
    data_files: str | None = None  # your own JSONL/Parquet files, comma-separated (data/user.py)
    samples_per_source: int = 400  # samples read per unit of mixture weight
    seq_len: int = 512  # token budget of one packed row
    micro_batch_size: int = 4  # packed rows per micro-batch (per rank)
    grad_accum: int = 1  # micro-batches per optimizer step once the batch has warmed up
    grad_accum_start: int = 0  # micro-batches per step at step 0 (0: no batch warm-up)
    batch_warmup_steps: int = 0  # steps over which grad_accum ramps from start to full
    balanced_packing: bool = True  # Intern-S1's variable-length balanced strategy across ranks
    balance_window: int = 32  # sliding window, in micro-batches, sorted by row length (VLBS)
    # -- optimisation
    max_steps: int = 200
    lr: float = 3e-3
    min_lr: float = 3e-4
    schedule: str = "wsd"  # wsd | cosine | constant
    warmup_steps: int = 20
    decay_frac: float = 0.2  # WSD: the last decay_frac of max_steps anneal to min_lr
    decay_shape: str = "sqrt"  # WSD decay: linear | sqrt | cosine
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    loss_reduction: str = "token"  # token | square (w = l^-1/2 per sample) | sample
    aux_loss_weight: float = 1.0  # multiplies the model's (already coefficient-scaled) MoE aux loss
    # -- fine-tuning
    freeze: str = ""  # comma list from FREEZABLE
    lora_rank: int = 0  # 0: full fine-tuning
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "qkv_proj,q_proj,k_proj,v_proj,o_proj"  # nn.Linear names (last name component)
    lora_scope: str = "language_model"  # module prefix the targets are looked for under ("" = all)
    # -- systems
    dtype: str = "auto"  # auto (bf16 autocast where supported) | bf16 | fp32
    device: str = "auto"  # auto | cpu | cuda
    activation_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    # -- guards
    spike_factor: float = 4.0  # skip the update when loss > spike_factor x running mean
    spike_warmup: int = 10  # steps before the spike guard arms
    max_skips: int = 20  # consecutive skipped updates before the run gives up
    # -- output
    out_dir: str = "runs/train"
    log_every: int = 1
    ckpt_every: int = 50  # 0: only at the end (and on SIGTERM)
    keep_checkpoints: int = 2
    max_seconds: float = 0.0  # wall-clock budget; 0 = none
    tensorboard: bool = True  # when the package is installed
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}")
        if self.schedule not in ("wsd", "cosine", "constant"):
            raise ValueError(f"schedule must be wsd, cosine or constant, got {self.schedule!r}")
        if self.decay_shape not in ("linear", "sqrt", "cosine"):
            raise ValueError(f"decay_shape must be linear, sqrt or cosine, got {self.decay_shape!r}")
        for name in ("seq_len", "micro_batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.decay_frac <= 1.0:
            raise ValueError(f"decay_frac must be in [0, 1], got {self.decay_frac}")
        bad = [f for f in self.freeze_list if f not in FREEZABLE]
        if bad:
            raise ValueError(f"cannot freeze {bad}; choose from {FREEZABLE}")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be auto, bf16 or fp32, got {self.dtype!r}")

    @property
    def freeze_list(self) -> list[str]:
        return [f.strip() for f in self.freeze.split(",") if f.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields that may differ between a run and its resumption without changing the
# training trajectory (where output goes, how long to run, how it is displayed).
RESUME_SAFE_FIELDS = frozenset(
    {"out_dir", "max_seconds", "progress", "tensorboard", "log_every", "ckpt_every", "keep_checkpoints", "max_steps", "device"}
)


# ---------------------------------------------------------------- stage presets

_PRESETS: dict[str, dict[str, Any]] = {
    "pretrain": dict(
        stage="pretrain", sources="gsm8k,latex,smiles,qm9,reactions,protein,dna",
        lr=3e-3, min_lr=3e-4, loss_reduction="token", grad_accum=2, grad_accum_start=1,
        batch_warmup_steps=20,
    ),
    "multimodal": dict(
        stage="multimodal", sources="molecule_images:2,microscopy:1,ecg:1,seismic:1,gsm8k:1,smiles:1,protein:1",
        lr=2e-3, min_lr=2e-4, loss_reduction="square", seq_len=512,
    ),
    "sft": dict(
        stage="sft", sources="envs", lr=5e-4, min_lr=5e-5, loss_reduction="square", warmup_steps=5,
        schedule="cosine", weight_decay=0.0,
    ),
}


def stage_presets() -> list[str]:
    return list(_PRESETS)


def get_train_preset(name: str, **overrides) -> TrainConfig:
    """A stage preset ("pretrain", "multimodal", "sft") with optional field overrides."""
    if name not in _PRESETS:
        raise KeyError(f"unknown training preset {name!r}; known: {', '.join(_PRESETS)}")
    return TrainConfig(**{**_PRESETS[name], **overrides})


# ---------------------------------------------------------------- overrides


def _coerce(value: str, annotation: Any) -> Any:
    """Parse a command-line string into the type of a dataclass field."""
    if isinstance(annotation, str):  # `from __future__ import annotations` leaves strings
        annotation = eval(annotation, {"typing": typing}, {})  # noqa: S307 - our own annotations
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null", ""):
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if annotation in (int, float, str):
        return annotation(value)
    raise ValueError(f"cannot parse {value!r} as {annotation}")


def apply_overrides(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    """Apply `key=value` strings (from `--set`) to a config; unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown TrainConfig field {key!r}; known: {', '.join(fields)}")
        try:
            changes[key] = _coerce(value.strip(), fields[key].type)
        except ValueError as e:
            raise ValueError(f"bad value for {key}: {e}") from None
    return dataclasses.replace(cfg, **changes)


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore=RESUME_SAFE_FIELDS) -> dict[str, tuple]:
    """Fields whose values differ between two config dicts (for the resume check)."""
    keys = (set(old) | set(new)) - set(ignore)
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


__all__ = [
    "TrainConfig", "get_train_preset", "stage_presets", "apply_overrides", "config_diff",
    "RESUME_SAFE_FIELDS", "STAGES", "FREEZABLE",
]
