"""The optimizer every training stage and RL use: torch's AdamW (fused where it can be), with
no weight decay on norms, biases and 1-D tensors."""

from __future__ import annotations

import torch

from opens1.train.config import TrainConfig
from opens1.train.schedule import lr_at


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on norms, biases and 1-D tensors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") or "norm" in name else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters (everything is frozen)")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return adamw(groups, lr=lr_at(0, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def adamw(params, **kw) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel where it has one (CPU and CUDA, floating point).
    Why: torch's default on CPU is the per-parameter loop; one step over the tiny model's
    3.6M parameters took 12.5 ms with it, 10.7 ms with foreach and 1.8 ms fused (timed alone,
    one thread). transformers' Trainer also defaults to the fused kernel."""
    groups = list(params)
    flat = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    devices = {p.device.type for p in flat}
    fused = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in flat)
    return torch.optim.AdamW(groups, fused=fused or None, **kw)
