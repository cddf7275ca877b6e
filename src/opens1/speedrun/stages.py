"""The supervised stages (pretrain, multimodal, SFT) inside a time budget or a fixed number of
steps, and the time-series encoder's supervised warm-up."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from opens1.data.sources import build_documents, load_mixture
from opens1.data.stream import build_stream
from opens1.envs import get_env
from opens1.processing.series import preprocess_series
from opens1.speedrun.config import ENCODER_LR, STAGE_TRAIN, Clock, SpeedrunConfig
from opens1.speedrun.runtime import duration, log
from opens1.train.config import get_train_preset
from opens1.train.optim import adamw
from opens1.train.trainer import Trainer

ENCODER_LR_WARMUP_STEPS = 30


class StepLog:
    """Per-step progress lines in the terminal (at most one every `every` seconds, and the
    last): loss, tokens per second, the stage's ETA and the run's clock."""

    def __init__(self, stage: str, planned: int, clock: Clock | None, *, every: float = 5.0):
        self.stage, self.planned, self.clock, self.every = stage, planned, clock, every
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tokens = 0

    def __call__(self, m: dict) -> None:
        step = m["step"]
        self.tokens += m.get("step_tokens", 0)
        now = time.perf_counter()
        if now - self.last < self.every and step < self.planned:
            return
        self.last = now
        dt = now - self.t0
        run = f"  run {duration(self.clock.elapsed())}/{duration(self.clock.total)}" if self.clock else ""
        plan = f"/{self.planned}" if self.planned else ""
        eta = f"  ETA {duration(dt / max(step, 1) * max(self.planned - step, 0))}" if self.planned else ""
        log(f"{self.stage:10s} step {step:5d}{plan}  loss {m['loss']:.4f}  "
            f"{self.tokens / max(dt, 1e-9):6.0f} tok/s{eta}{run}")


def run_train_stage(name: str, model, tok, proc, scfg: SpeedrunConfig, *, seconds: float, out: Path,
                    samples: list | None = None, sources: str | None = None, steps: int = 0,
                    clock: Clock | None = None) -> dict:
    """One supervised stage (pretrain / multimodal / sft) inside `seconds`, or exactly
    `steps` optimizer steps when given; returns its report entry."""
    t0 = time.perf_counter()
    per_source = int(min(400, max(20, 15 * scfg.minutes)))  # samples per source scale with the budget
    settings = dict(seq_len=scfg.seq_len, micro_batch_size=scfg.micro_batch_size, samples_per_source=per_source,
                    data_root=scfg.data, seed=scfg.seed, out_dir=str(out / "stages" / name), ckpt_every=0,
                    progress=False, tensorboard=False, max_steps=10_000)
    cfg = get_train_preset(name, **{**settings, **STAGE_TRAIN.get(name, {}), **scfg.train.get(name, {})})
    if samples is None:
        samples = load_mixture(sources or cfg.sources, scfg.data, samples_per_unit=cfg.samples_per_source, seed=scfg.seed)
    # chats in the format evaluation and RL prompt with: no thinking system prompt
    docs = build_documents(samples, cfg.stage, tok, proc, enable_thinking=False)
    if name != "pretrain":
        # a row must hold the longest conversation (they are never cut): none is dropped
        longest = max(len(d) for d in docs)
        cfg = cfg.replace(seq_len=max(cfg.seq_len, -(-longest // 64) * 64))
    stream, hashes = build_stream(cfg, tok, proc, docs=docs)
    steplog = StepLog(name, steps, clock)  # planned 0: not known until the step time is measured
    trainer = Trainer(model, cfg.replace(max_steps=steps or 1_000_000), stream, cfg.out_dir, resume=False,
                      data_hashes=hashes, on_log=steplog)
    if steps:
        losses = list(trainer.fit(max_steps=steps).losses)
    else:
        losses = _fit_in_time(trainer, steplog, end=t0 + seconds)
    entry = {"loss": [float(x) for x in losses], "steps": trainer.step, "tokens": trainer.tokens,
             "seconds": time.perf_counter() - t0, "documents": len(docs), "dropped_documents": stream.dropped,
             "planned_steps": trainer.cfg.max_steps, "seq_len": cfg.seq_len, "lr": cfg.lr,
             "sources": sorted({d.source for d in docs if getattr(d, "source", None)})}
    log(f"{name}: {entry['steps']} steps, {entry['tokens']:,} tokens, loss {losses[0]:.3f} -> {losses[-1]:.3f} "
        f"in {entry['seconds']:.0f}s")
    return entry


def _fit_in_time(trainer: Trainer, steplog: StepLog, *, end: float) -> list[float]:
    """Trains until `end` (a time.perf_counter() value); returns the step losses. The schedule
    is sized from the measured step time: 2 untimed steps (first-call overheads), 4 timed
    ones, a first quarter of the plan, then the rest re-planned from the rate of that
    quarter (a shared machine's speed drifts). The WSD schedule is flat until its decay, so
    moving its end during the flat part changes nothing already done."""
    losses: list[float] = []

    def fit(until: int) -> None:
        losses.extend(trainer.fit(max_steps=until, max_seconds=max(0.5, end - time.perf_counter())).losses)

    fit(2)
    tp, s0 = time.perf_counter(), trainer.step
    fit(6)
    for segment in (0.25, 0.5, 1.0):
        per_step = (time.perf_counter() - tp) / max(1, trainer.step - s0)
        planned = trainer.step + max(1, int((end - time.perf_counter()) * 0.97 / per_step))
        trainer.cfg = trainer.cfg.replace(max_steps=planned)
        steplog.planned = planned
        tp, s0 = time.perf_counter(), trainer.step
        fit(trainer.step + max(1, int(segment * (planned - trainer.step))))
        if time.perf_counter() >= end:
            break
    return losses


def _series_of(case) -> tuple | None:
    """(values, sampling rate) of the first time-series part of a case's prompt, or None."""
    for m in case.messages():
        for part in m["content"] if isinstance(m["content"], list) else []:
            if part.get("type") == "time_series":
                return part["time_series"]["values"], part["time_series"].get("sampling_rate")
    return None


def _series_examples(tasks: list[str], data) -> tuple[list, list[str], list[str]]:
    """(preprocessed series with their rates, "task|answer" labels, the time-series tasks)
    from the train split of the tasks whose prompts hold a series."""
    xs, labels, names = [], [], []
    for task in tasks:
        env = get_env(task, data_root=data)
        if _series_of(env.case(0, "train")) is None:
            continue
        names.append(task)
        for i in range(min(4000, env.num_cases("train"))):
            case = env.case(i, "train")
            values, rate = _series_of(case)
            x, sr = preprocess_series(values, rate)  # [T, C], z-scored: what the processor feeds the tower
            xs.append((x, sr))
            labels.append(f"{task}|{case.reference!r}")
    return xs, labels, names


def warm_up_series_encoder(model, tasks: list[str], *, data, seconds: float, seed: int = 0,
                           steps: int = 0, batch: int = 16) -> dict | None:
    """Supervised warm-up of the time-series tower and its projector on the train split of
    the time-series tasks: a linear head on the mean of the projected series tokens
    predicts the task's answer (cross-entropy), for `seconds` (or `steps`); the head is then
    dropped. The head reads batch-standardised features: on raw ones the loss sat at
    log(classes) for 75 to 300+ steps, or left it and collapsed back, depending on the seed
    (lr 1e-3-2e-3, with or without warm-up); standardised, all 4 seeds tried fell from the
    first steps (1.8 -> 0.2-0.3 in 200 steps). Past its time the warm-up goes on until the loss
    is below half of log(classes), for at most twice its time. Why the warm-up: at
    initialisation the projected series tokens of two different traces differ by ~5% of their
    norm (the common part: positions, biases), and a language model reading such nearly
    constant tokens stayed at the answer prior for 240 SFT steps
    (frozen or trained tower alike), while after 200 steps of this warm-up it learned the
    dominant-frequency task within 80 steps (answer cross-entropy 2.6 -> 0.3 bits).
    Encoders pretrained before alignment are the usual recipe (Intern-S1's time-series
    encoder is a pretrained one). Returns the stage's report entry, or None without a
    time-series task."""
    if model.ts_tower is None:
        return None
    xs, labels, names = _series_examples(tasks, data)
    if not xs:
        return None
    t0 = time.perf_counter()  # the budget is for training: the data above is cached for SFT anyway
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(l) for l in labels])
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(model.config.text.hidden_size, affine=False),
                               torch.nn.Linear(model.config.text.hidden_size, len(classes)))
    params = [*model.ts_tower.parameters(), *model.ts_projector.parameters(), *head.parameters()]
    opt = adamw(params, lr=ENCODER_LR, weight_decay=0.0)
    losses: list[float] = []
    ema = math.log(len(classes))

    def more() -> bool:
        if steps:
            return len(losses) < steps
        dt = time.perf_counter() - t0
        return not losses or dt < seconds or (dt < 2 * seconds and ema > 0.5 * math.log(len(classes)))

    model.ts_tower.train()
    while more():
        idx = torch.randint(0, len(xs), (batch,), generator=gen)
        feats = model.ts_tower([xs[i][0] for i in idx], [xs[i][1] for i in idx])
        pooled = torch.stack([model.ts_projector(f).mean(0) for f in feats])  # [batch, hidden]
        loss = F.cross_entropy(head(pooled), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # warm-up and clipping: the patch encoder is a post-LN transformer layer, which
        # without them escaped the plateau and then collapsed back to log(classes)
        for g in opt.param_groups:
            g["lr"] = ENCODER_LR * min(1.0, (len(losses) + 1) / ENCODER_LR_WARMUP_STEPS)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        ema = 0.9 * ema + 0.1 * losses[-1]
    entry = {"loss": losses, "steps": len(losses), "tokens": 0, "seconds": time.perf_counter() - t0,
             "tasks": names, "examples": len(xs), "classes": len(classes)}
    log(f"series encoder warm-up on {names}: {len(losses)} steps, loss {losses[0]:.3f} -> "
        f"{sum(losses[-10:]) / len(losses[-10:]):.3f} in {entry['seconds']:.0f}s")
    return entry
