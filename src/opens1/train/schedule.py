"""Learning-rate and batch-size schedules.

WSD (warm-up, stable, decay): linear warm-up to the peak, a long constant plateau,
then a short anneal to `min_lr`. Intern-S1 uses WSD because the plateau decouples the
schedule from the total token count: a run can be extended (or branched into a decay
at any checkpoint) without re-planning the whole curve. The decay shape defaults to
1 - sqrt(progress), which anneals quickly at first and is what most WSD studies use.

Batch-size warm-up: Intern-S1 trains with a small batch early (more updates per token
while the gradient noise scale is small) and doubles it later (66M -> 132M tokens
after 400B). Here the batch grows through the number of gradient-accumulation
micro-batches, so the per-rank memory footprint never changes.

Both schedules are pure functions of the step, so resuming from a checkpoint needs
only the step counter (no scheduler object to save).
"""

from __future__ import annotations

import math


def wsd_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int,
           decay_frac: float = 0.2, decay_shape: str = "sqrt") -> float:
    """Learning rate at optimizer step `step` (0-based) of a warm-up-stable-decay schedule."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = int(round(decay_frac * max_steps))
    decay_start = max_steps - decay_steps
    if decay_steps <= 0 or step < decay_start:
        return lr
    # progress through the decay in (0, 1]; the last step lands exactly on min_lr
    p = min(1.0, (step - decay_start + 1) / decay_steps)
    if decay_shape == "linear":
        f = 1.0 - p
    elif decay_shape == "sqrt":
        f = 1.0 - math.sqrt(p)
    elif decay_shape == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        raise ValueError(f"unknown decay shape {decay_shape!r}")
    return min_lr + (lr - min_lr) * f


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up, then a cosine from `lr` to `min_lr` at `max_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    p = min(1.0, (step - warmup_steps + 1) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))


def lr_at(step: int, cfg) -> float:
    """The learning rate of a TrainConfig's schedule at `step`."""
    common = dict(lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps)
    if cfg.schedule == "wsd":
        return wsd_lr(step, decay_frac=cfg.decay_frac, decay_shape=cfg.decay_shape, **common)
    if cfg.schedule == "cosine":
        return cosine_lr(step, **common)
    if cfg.schedule == "constant":
        return cfg.lr if cfg.warmup_steps <= 0 or step >= cfg.warmup_steps else cfg.lr * (step + 1) / cfg.warmup_steps
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def grad_accum_at(step: int, *, start: int, full: int, warmup_steps: int) -> int:
    """Micro-batches per optimizer step: ramps linearly (in whole micro-batches) from
    `start` to `full` over `warmup_steps`; `start <= 0` or no warm-up means `full`.
    With warmup_steps=1 this is Intern-S1's single switch (small batch, then large)."""
    if start <= 0 or warmup_steps <= 0 or step >= warmup_steps or start >= full:
        return full
    return start + (full - start) * step // warmup_steps


def accum_for(step: int, cfg) -> int:
    return grad_accum_at(step, start=cfg.grad_accum_start, full=cfg.grad_accum, warmup_steps=cfg.batch_warmup_steps)
