"""The training loop: one `Trainer` for pretraining, multimodal pretraining and SFT, on one
CPU or on many GPUs with FSDP2.

Usage (the library API the speedrun builds on; keep it stable):

    import opens1
    from opens1.train.build import build_model         # preset sized for the tokenizer, media ids set
    from opens1.train.config import get_train_preset   # "pretrain" | "multimodal" | "sft"
    from opens1.data.stream import build_stream         # sources -> tokens -> packed stream
    from opens1.train.trainer import train

    tokenizer = opens1.load_tokenizer()
    cfg = get_train_preset("pretrain", model="tiny", max_steps=100, seq_len=256, out_dir="runs/pt")
    model, model_cfg = build_model(cfg, tokenizer)     # or S1ForConditionalGeneration(config)
    processor = opens1.Processor(tokenizer, model_cfg)
    stream, hashes = build_stream(cfg, tokenizer, processor)   # or any iterator of PackedBatch
    result = train(model, cfg, stream, cfg.out_dir, max_seconds=300, data_hashes=hashes)
    result.losses, result.steps, result.tokens, result.seconds   # TrainResult
    opens1.save_model(model, "runs/pt/final")   # or Trainer(...).export(dir) under FSDP / with LoRA

    # then multimodal pretraining and SFT continue from the same model object:
    cfg2 = get_train_preset("sft", max_steps=50, out_dir="runs/sft")
    stream2, _ = build_stream(cfg2, tokenizer, processor)
    train(model, cfg2, stream2, cfg2.out_dir, max_seconds=120, on_log=print)  # on_log: per-step metrics

A `model` may be parallelized first (train/parallelize.py: activation checkpointing,
compile, FSDP2); the out_dir holds checkpoints/, metrics.jsonl and tb/ (TensorBoard).

Each optimizer step:
  1. take `accum` micro-batches (accum follows the batch-size warm-up),
  2. weight every loss token (token / square / sample reduction, losses.py) and all-reduce
     the step's total weight, so accumulation and data parallelism give the gradient of
     one big batch (2 ranks x 1 micro-batch == 1 rank x 2 micro-batches),
  3. forward under bf16 autocast where the hardware has it, to the final hidden states; the
     loss (losses.linear_cross_entropy) runs the head on the labelled rows only, fused with
     the cross-entropy; plus the MoE aux loss; backward,
  4. guards: a non-finite loss or gradient norm, or a loss spike (> spike_factor x the
     running mean), skips the update (logged); the same decision on every rank because
     the loss and norm are global,
  5. clip, set the WSD learning rate, optimizer step,
  6. log JSONL (+ TensorBoard), progress bar with tokens/s and MFU, checkpoint.
SIGTERM makes the loop write a checkpoint after the current step and return; SIGKILL
loses only the steps since the last checkpoint; `max_seconds` stops cleanly.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from opens1.models.checkpoint import save_model
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.train import checkpointing as ckpt
from opens1.train.config import TrainConfig, config_diff
from opens1.train.distributed import all_reduce as _all_reduce
from opens1.train.distributed import dist_info
from opens1.train.flops import flops_per_token, measured_peak_flops, step_flops, sync
from opens1.train.lora import merged_state_dict
from opens1.train.losses import head_weight, linear_cross_entropy, loss_weights
from opens1.train.optim import build_optimizer
from opens1.train.schedule import accum_for, lr_at


@dataclass
class TrainResult:
    losses: list[float]  # the loss of every logged step (global, all ranks)
    steps: int  # optimizer steps taken in total (including before a resume)
    tokens: int  # real (non-padding) tokens consumed in total
    seconds: float  # wall-clock seconds of this call
    skipped: int = 0  # updates skipped by the NaN / spike guards
    stopped: str = "max_steps"  # max_steps | max_seconds | sigterm | data_exhausted
    checkpoint: str | None = None  # the last checkpoint written
    log_steps: list[int] = field(default_factory=list)  # the step of every entry in `losses`
    metrics_path: str | None = None


# ---------------------------------------------------------------- distributed / device helpers


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware does it well (CUDA with bf16; CPU only if asked)."""
    if cfg.dtype == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cfg.dtype == "bf16" else None  # CPU bf16 is slow on most CPUs


# ---------------------------------------------------------------- the trainer


class Trainer:
    """Optimizer steps over an iterator of `packing.PackedBatch` micro-batches (this rank's).

    model: an S1ForConditionalGeneration (already parallelized if FSDP is wanted; see
    train/parallelize.py). batches: any iterator of PackedBatch; if it has
    state_dict()/load_state_dict() (packing.PackedStream does) its position is
    checkpointed and restored, otherwise a resume fast-forwards it by the micro-batches
    already consumed. out_dir: checkpoints, metrics.jsonl, TensorBoard events.
    resume: "auto" (continue from out_dir's latest checkpoint if there is one), True
    (must exist), False (start fresh), or a checkpoint path. force: resume even if the
    config changed. on_log: a callback given each logged step's metrics dict (rank 0)."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, batches: Iterable, out_dir: str | Path | None = None,
                 *, optimizer: torch.optim.Optimizer | None = None, device: torch.device | str | None = None,
                 resume: bool | str = "auto", force: bool = False, data_hashes: dict | None = None,
                 model_config=None, on_log: Callable[[dict], None] | None = None):
        self.cfg = cfg
        self.on_log = on_log  # called with every logged step's metrics on rank 0 (e.g. live eval)
        self.model = model
        self.rank, self.world = dist_info()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.out_dir = Path(out_dir if out_dir is not None else cfg.out_dir)
        self._check_writable()
        self.batches = batches
        self._iter: Iterator = iter(batches)
        self.model_config = model_config or getattr(_unwrap(model), "config", None)
        self.optimizer = optimizer or build_optimizer(model, cfg)
        self.amp = autocast_dtype(cfg, self.device)
        self.data_hashes = dict(data_hashes or {})
        self.step = 0
        self.tokens = 0
        self.micro_batches = 0  # consumed by this rank (for iterators without state_dict)
        self.skipped = 0
        self.consecutive_skips = 0
        self.loss_ema: float | None = None
        self._stop_signal = threading.Event()
        self.last_checkpoint: str | None = None
        self._saved_step = -1  # the step of the newest checkpoint (no re-save of the same state)
        self._tb = None
        if resume:
            self._maybe_resume(resume, force)

    # ------------------------------------------------------------ setup helpers

    def _check_writable(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe = self.out_dir / f".write_probe_{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise PermissionError(f"output directory {str(self.out_dir)!r} is not writable: {e.strerror or e}") from None

    def _meta(self) -> dict:
        return {
            "config": self.cfg.to_dict(), "tokens": self.tokens, "micro_batches": self.micro_batches,
            "skipped": self.skipped, "loss_ema": self.loss_ema, "data_hashes": self.data_hashes,
            "model_config": self.model_config.to_dict() if hasattr(self.model_config, "to_dict") else None,
        }

    def _maybe_resume(self, resume: bool | str, force: bool) -> None:
        path = ckpt.latest_checkpoint(resume if isinstance(resume, str) and resume != "auto" else self.out_dir)
        if path is None:
            if resume is True or (isinstance(resume, str) and resume != "auto"):
                raise FileNotFoundError(f"no checkpoint to resume from in {resume if isinstance(resume, str) else self.out_dir}")
            return
        old = ckpt.read_meta(path)
        diff = config_diff(old.get("config", {}), self.cfg.to_dict())
        hashes_changed = {k: (old.get("data_hashes", {}).get(k), v) for k, v in self.data_hashes.items()
                          if old.get("data_hashes", {}).get(k) not in (None, v)}
        if (diff or hashes_changed) and not force:
            lines = [f"  {k}: {a!r} -> {b!r}" for k, (a, b) in {**diff, **hashes_changed}.items()]
            raise ValueError(f"refusing to resume from {path}: the config or data changed\n" + "\n".join(lines)
                             + "\n(pass force=True / --force to resume anyway, or use a new out_dir)")
        if int(old.get("world_size", 1)) != self.world:
            # allowed (the data order is world-size independent), but the global batch changes
            msg = f"resuming a {old.get('world_size')}-rank run on {self.world} rank(s): the global batch size changes"
            self._log_event({"event": "world_size_changed", "message": msg})
            if self.rank == 0:
                print(f"opens1 train: warning: {msg}", file=sys.stderr)
        meta = ckpt.load_checkpoint(path, self.model, self.optimizer)
        self.step = int(meta["step"])
        self.tokens = int(meta.get("tokens", 0))
        self.skipped = int(meta.get("skipped", 0))
        self.loss_ema = meta.get("loss_ema")
        self.micro_batches = int(meta.get("micro_batches", 0))
        state = meta.get("data_state")
        if state is not None and hasattr(self.batches, "load_state_dict"):
            self.batches.load_state_dict(state)
            self._iter = iter(self.batches)
        else:  # fast-forward an iterator that cannot seek
            for _ in range(self.micro_batches):
                next(self._iter)
        self.last_checkpoint = str(path)
        self._saved_step = self.step
        self._log_event({"event": "resumed", "from": str(path), "step": self.step})

    # ------------------------------------------------------------ one optimizer step

    def _next_micro_batches(self, n: int) -> list:
        out = []
        for _ in range(n):
            out.append(next(self._iter))
            self.micro_batches += 1
        return out

    def train_step(self) -> dict:
        """One optimizer step (or a skipped one). Returns its metrics."""
        cfg, model = self.cfg, self.model
        model.train()
        accum = accum_for(self.step, cfg)
        mbs = [mb.to(self.device) for mb in self._next_micro_batches(accum)]
        weights = [loss_weights(mb.labels, mb.doc_ids, cfg.loss_reduction) for mb in mbs]
        # global normaliser and token counts: one small all-reduce for the whole step
        stats = torch.tensor([float(sum(w.sum() for w in weights)), float(sum(mb.n_tokens for mb in mbs)),
                              float(sum(mb.n_loss_tokens for mb in mbs))], dtype=torch.float64, device=self.device)
        _all_reduce(stats)
        w_total, n_tokens, n_loss = float(stats[0]), int(stats[1]), int(stats[2])
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        aux_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        aux_coef = cfg.aux_loss_weight * _aux_coef(self.model_config)
        t0 = time.perf_counter()
        for i, (mb, w) in enumerate(zip(mbs, weights)):
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter once per step
                model.set_requires_gradient_sync(i == len(mbs) - 1)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = model(**mb.model_inputs(), attention_mask=mb.attention_mask, output_router_logits=True,
                            return_hidden=True)
                # the head runs inside the loss, on the labelled rows only: sum(w * ce) of this micro-batch
                part = linear_cross_entropy(out.hidden_states, head_weight(model), mb.labels, w)
            # x world: FSDP averages gradients over ranks, the normaliser is already global
            loss = part * (self.world / max(w_total, 1e-12))
            aux = getattr(out, "aux_loss", None)
            if aux is not None and aux_coef > 0:
                loss = loss + aux.float() * (aux_coef / len(mbs))
                aux_sum += aux.detach().float() / len(mbs)
            loss.backward()
            loss_sum += part.detach()
        _all_reduce(loss_sum)
        _all_reduce(aux_sum)
        aux_sum /= self.world
        step_loss = float(loss_sum) / max(w_total, 1e-12)
        grad_norm = self._clip()
        skip = self._guard(step_loss, grad_norm)
        lr = lr_at(self.step, cfg)
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.consecutive_skips += 1
            if self.consecutive_skips > cfg.max_skips:
                raise RuntimeError(f"{self.consecutive_skips} consecutive updates skipped ({skip}); stopping: "
                                   "lower the learning rate or check the data")
        else:
            for g in self.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.consecutive_skips = 0
            self.loss_ema = step_loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * step_loss
        sync(self.device)
        dt = time.perf_counter() - t0
        self.step += 1
        self.tokens += n_tokens
        seq = max(mb.input_ids.shape[1] for mb in mbs)
        return {"step": self.step, "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "accum": accum,
                "tokens": self.tokens, "step_tokens": n_tokens, "loss_tokens": n_loss, "aux_loss": float(aux_sum),
                "seconds": dt, "skipped": skip or None, "seq_len": seq}

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
            norm = norm.full_tensor()
        return float(norm)

    def _guard(self, loss: float, grad_norm: float) -> str:
        """Why this update must be skipped ("" if it may go ahead)."""
        if not math.isfinite(loss):
            return "non-finite loss"
        if not math.isfinite(grad_norm):
            return "non-finite gradient"
        c = self.cfg
        if (c.spike_factor > 0 and self.loss_ema is not None and self.step >= c.spike_warmup
                and loss > c.spike_factor * self.loss_ema):
            return f"loss spike ({loss:.3f} > {c.spike_factor:g} x {self.loss_ema:.3f})"
        return ""

    # ------------------------------------------------------------ the loop

    def fit(self, max_steps: int | None = None, max_seconds: float | None = None) -> TrainResult:
        """Train until `max_steps` (default cfg.max_steps, counted from step 0 of the run),
        the wall-clock budget (default cfg.max_seconds; 0 = none), SIGTERM, or the end
        of a finite iterator. Writes a final checkpoint. Collective under torch.distributed."""
        cfg = self.cfg
        max_steps = cfg.max_steps if max_steps is None else max_steps
        budget = cfg.max_seconds if max_seconds is None else max_seconds
        t_start = time.perf_counter()
        losses, log_steps = [], []
        stopped = "max_steps"
        old_handler = self._install_sigterm()
        bar = self._progress(max_steps)
        fpt = flops_per_token(self.model_config, cfg.seq_len) if self.model_config is not None else 0.0
        peak = measured_peak_flops(self.device, self.amp) if fpt else 0.0
        try:
            while self.step < max_steps:
                try:
                    m = self.train_step()
                except StopIteration:
                    stopped = "data_exhausted"
                    break
                m["tok_per_s"] = m["step_tokens"] / max(m["seconds"], 1e-9)
                if fpt:
                    flops = step_flops(self.model_config, m["seq_len"], m["step_tokens"], m["loss_tokens"])
                    m["mfu"] = flops / max(m["seconds"], 1e-9) / (peak * self.world)
                if m["skipped"]:
                    self._log_event({"event": "skipped_update", "step": m["step"], "why": m["skipped"], "loss": m["loss"]})
                if self.step % max(1, cfg.log_every) == 0 or self.step == max_steps:
                    losses.append(m["loss"])
                    log_steps.append(m["step"])
                    self._log(m)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tok_per_s']:.0f}",
                                    mfu=f"{100 * m.get('mfu', 0):.1f}%")
                stop = self._agree_stop(budget, t_start)
                if cfg.ckpt_every > 0 and self.step % cfg.ckpt_every == 0 and self.step < max_steps and not stop:
                    self.save()
                if stop:
                    stopped = stop
                    break
            if self.step != self._saved_step:
                self.save()
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
            if self._tb is not None:
                self._tb.flush()
        return TrainResult(losses, self.step, self.tokens, time.perf_counter() - t_start, self.skipped, stopped,
                           self.last_checkpoint, log_steps, str(self.out_dir / "metrics.jsonl"))

    def _agree_stop(self, budget: float, t_start: float) -> str:
        """Stop reasons that every rank must agree on (SIGTERM may reach only some)."""
        flags = torch.tensor([float(self._stop_signal.is_set()),
                              float(budget > 0 and time.perf_counter() - t_start >= budget)], device=self.device)
        _all_reduce(flags, dist.ReduceOp.MAX if dist.is_available() else None)
        if flags[0] > 0:
            self._log_event({"event": "sigterm", "step": self.step})
            return "sigterm"
        return "max_seconds" if flags[1] > 0 else ""

    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return None  # signal handlers can only be set from the main thread
        return signal.signal(signal.SIGTERM, lambda *_: self._stop_signal.set())

    def save(self) -> str | None:
        """Write a checkpoint of the current step (collective)."""
        state = self.batches.state_dict() if hasattr(self.batches, "state_dict") else None
        path = ckpt.save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, meta=self._meta(),
                                    data_state=state, keep=self.cfg.keep_checkpoints)
        self._saved_step = self.step
        if path is not None:
            self.last_checkpoint = str(path)
            self._log_event({"event": "checkpoint", "step": self.step, "path": str(path)})
        return self.last_checkpoint

    def export(self, path: str | Path) -> Path | None:
        """The final model in the Intern-S1 HF layout (opens1.save_model), readable by
        opens1.load_model: LoRA merged, FSDP shards gathered, written by rank 0."""
        sd = merged_state_dict(self.model)  # full, on every rank's CPU (rank 0 under FSDP)
        if self.rank != 0:
            return None
        fresh = S1ForConditionalGeneration(self.model_config)  # plain CPU copy: no FSDP, no LoRA
        fresh.load_state_dict(sd, strict=True)
        save_model(fresh, path)
        return Path(path)

    # ------------------------------------------------------------ logging

    def _progress(self, total: int):
        if not self.cfg.progress or self.rank != 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.step, desc=f"train[{self.cfg.stage}]", unit="step", dynamic_ncols=True)

    def _log(self, m: dict) -> None:
        if self.rank != 0:
            return
        self._write_jsonl({k: v for k, v in m.items() if v is not None})
        if self.on_log is not None:
            self.on_log(dict(m))
        tb = self._tensorboard()
        if tb is not None:
            for k in ("loss", "lr", "grad_norm", "tok_per_s", "mfu", "aux_loss"):
                if k in m and m[k] is not None:
                    tb.add_scalar(f"train/{k}", m[k], m["step"])

    def _log_event(self, e: dict) -> None:
        if self.rank == 0:
            self._write_jsonl({"time": time.time(), **e})

    def _write_jsonl(self, rec: dict) -> None:
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def _tensorboard(self):
        if self._tb is None and self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.cfg = self.cfg.replace(tensorboard=False)
                return None
            self._tb = SummaryWriter(str(self.out_dir / "tb"))
        return self._tb


def _aux_coef(model_cfg) -> float:
    t = getattr(model_cfg, "text", None)
    return float(getattr(t, "router_aux_loss_coef", 0.0) or 0.0) if t is not None and t.is_moe else 0.0


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)


def train(model: torch.nn.Module, cfg: TrainConfig, data_iter: Iterable, out_dir: str | Path | None = None, *,
          max_seconds: float | None = None, max_steps: int | None = None, resume: bool | str = "auto",
          force: bool = False, device=None, data_hashes: dict | None = None,
          on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model` on micro-batches from `data_iter` with `cfg`; see the module docstring."""
    trainer = Trainer(model, cfg, data_iter, out_dir, resume=resume, force=force, device=device,
                      data_hashes=data_hashes, on_log=on_log)
    return trainer.fit(max_steps=max_steps, max_seconds=max_seconds)
