"""The model a training run starts from, and its preparation for training.

    model, model_cfg = build_model(cfg, tokenizer)   a fresh preset or a saved checkpoint
    model = prepare_model(model, cfg, device)        freeze / LoRA, device, parallelize

`opens1 train` (cli/train.py) builds its model with these.
"""

from __future__ import annotations

import torch

from opens1.config import S1Config, get_preset
from opens1.models.checkpoint import load_model
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.processing.processor import configure
from opens1.train.config import TrainConfig
from opens1.train.lora import apply_lora, freeze
from opens1.train.parallelize import parallelize
from opens1.train.trainer import autocast_dtype


def sized_preset(name: str, tokenizer) -> S1Config:
    """A model preset with room for every tokenizer id (a multiple of 64) and the
    tokenizer's media token ids."""
    mcfg = get_preset(name)
    need = -(-len(tokenizer) // 64) * 64
    mcfg.text.vocab_size = max(mcfg.text.vocab_size, need)
    configure(tokenizer, mcfg)
    return mcfg


def build_model(cfg: TrainConfig, tokenizer) -> tuple[S1ForConditionalGeneration, S1Config]:
    """The model for a TrainConfig: a fresh preset (vocab sized for the tokenizer, media
    token ids from it) or a saved checkpoint."""
    if cfg.init_from:
        # fp32 master weights whatever the checkpoint's dtype: autocast does the bf16 compute
        model = load_model(cfg.init_from, dtype=torch.float32)
        return model, model.config
    mcfg = sized_preset(cfg.model, tokenizer)
    return S1ForConditionalGeneration(mcfg), mcfg


def prepare_model(model: torch.nn.Module, cfg: TrainConfig, device) -> torch.nn.Module:
    """Freeze / LoRA, move to the device, parallelize (checkpointing, compile, FSDP)."""
    if cfg.freeze_list:
        freeze(model, cfg.freeze_list)
    if cfg.lora_rank > 0:
        apply_lora(model, [t.strip() for t in cfg.lora_targets.split(",") if t.strip()], cfg.lora_rank,
                   alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, scope=cfg.lora_scope)
    model.to(device)
    amp = autocast_dtype(cfg, torch.device(device))
    return parallelize(model, activation_checkpointing=cfg.activation_checkpointing, compile=cfg.compile,
                       param_dtype=amp if torch.device(device).type == "cuda" else None)
