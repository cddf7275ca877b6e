"""The whole run: the stages in order (pretrain, multimodal with the series encoder's warm-up,
SFT, RL on a task chosen by a held-out probe, evaluation), each inside its share of the
wall-clock budget or its fixed steps, then the saved model and the report."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from opens1.models import save_model
from opens1.speedrun.config import (ENCODER_WARMUP, MIN_STEPS, MULTIMODAL_SOURCES, PRETRAIN_SOURCES, STAGES, Clock,
                                    SpeedrunConfig)
from opens1.speedrun.evaluation import evaluate
from opens1.speedrun.model import model_entry, starting_model
from opens1.speedrun.report import load_plotting, write_json, write_report
from opens1.speedrun.rl import RL_CEILING, choose_rl_envs, rl_heldout_items, run_rl
from opens1.speedrun.runtime import git_revision, log, set_threads
from opens1.speedrun.stages import run_train_stage, warm_up_series_encoder
from opens1.speedrun.tasks import sft_samples

RL_PROBE_ITEMS = 100  # held-out items per task for choosing RL's task
RL_PROBE_SHARE = 0.12  # of the RL stage's time


@dataclass(kw_only=True)
class RunState:
    """What the stages share: the settings, the clock, the model and the report so far."""
    scfg: SpeedrunConfig
    clock: Clock
    out: Path
    tok: object
    model: object
    proc: object
    report: dict
    todo: list[str]  # stages still to run

    @property
    def fixed(self) -> bool:
        return bool(self.scfg.steps)

    def budget(self, stage: str) -> float:
        return self.clock.share(stage, self.todo)

    def steps(self, stage: str, default: int = 0) -> int:
        """The stage's fixed steps (0 in a time-budget run)."""
        return self.scfg.steps.get(stage, default) if self.fixed else 0

    def train(self, stage: str, seconds: float, **kw) -> dict:
        return run_train_stage(stage, self.model, self.tok, self.proc, self.scfg, seconds=seconds, out=self.out,
                               steps=self.steps(stage), clock=self.clock, **kw)


def run(scfg: SpeedrunConfig, start: float | None = None) -> dict:
    """The whole run. `start`: the time.perf_counter() value the budget counts from (the
    command line passes the process start; default now)."""
    clock = Clock(scfg.minutes, start)
    threads_note = set_threads(scfg.threads)
    out = Path(scfg.out)
    out.mkdir(parents=True, exist_ok=True)
    load_plotting()
    report = _new_report(scfg, threads_note)
    tok, model, proc = starting_model(scfg, out)
    report["model"] = model_entry(model, tok, scfg.preset)
    log(f"model {scfg.preset}: {report['model']['parameters'] / 1e6:.2f}M parameters "
        f"({report['model']['active_parameters'] / 1e6:.2f}M active), tokenizer {len(tok)} ids, "
        f"{model.config.text.vocab_size} embedding rows; {torch.get_num_threads()} threads ({threads_note})")
    r = RunState(scfg=scfg, clock=clock, out=out, tok=tok, model=model, proc=proc, report=report,
                 todo=[s for s in STAGES if s in scfg.stages])
    if "pretrain" in r.todo:
        report["stages"]["pretrain"] = r.train("pretrain", r.budget("pretrain"), sources=PRETRAIN_SOURCES)
        r.todo.remove("pretrain")
    if "multimodal" in r.todo:
        _multimodal(r)
        r.todo.remove("multimodal")
    samples, tasks = sft_samples(scfg.data, per_env=_sft_examples(scfg), tasks=scfg.tasks)
    report["tasks"] = tasks
    if "sft" in r.todo:
        report["stages"]["sft"] = r.train("sft", r.budget("sft"), samples=samples)
        r.todo.remove("sft")
    if "rl" in r.todo:
        _rl(r, tasks)
    if "eval" in r.todo:
        report["eval"] = evaluate(model, tok, proc, tasks, items=scfg.eval_items, seconds=r.budget("eval"),
                                  data=scfg.data, timed=not r.fixed)
        r.todo.remove("eval")
    _finish(r)
    return report


def _new_report(scfg: SpeedrunConfig, threads_note: str) -> dict:
    return {"config": asdict(scfg), "git_revision": git_revision(), "stages": {},
            "mode": "fixed steps" if scfg.steps else "time budget",
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "threads_note": threads_note,
                        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                        "python": platform.python_version(), "torch": torch.__version__}}


def _multimodal(r: RunState) -> None:
    """Image/series-text pretraining, then the time-series encoder's supervised warm-up: in
    the other order 5 caption steps (ECG windows through the same tower, a fresh optimizer)
    undid the warm-up, and SFT stayed at the prior on the frequency task (0.17, not 0.99)."""
    seconds = r.budget("multimodal")
    t0 = time.perf_counter()
    r.report["stages"]["multimodal"] = r.train("multimodal", (1 - ENCODER_WARMUP) * seconds,
                                               sources=MULTIMODAL_SOURCES)
    warm = warm_up_series_encoder(r.model, r.scfg.tasks, data=r.scfg.data,
                                  seconds=seconds - (time.perf_counter() - t0),
                                  seed=r.scfg.seed, steps=r.steps("encoder", 200))
    if warm:
        r.report["stages"]["encoder"] = warm


def _sft_examples(scfg: SpeedrunConfig) -> int:
    """SFT examples per task: scaled with the budget (building 30k chat examples would eat a
    3-minute run), or 8000 for fixed work, unless --sft-examples sets them."""
    if scfg.steps:
        return scfg.sft_examples or 8000
    return scfg.sft_examples or int(min(8000, max(100, 300 * scfg.minutes)))


def _rl(r: RunState, tasks: list[str]) -> None:
    """RL on --rl-envs, or on the task choose_rl_envs picks from a quick held-out probe (RL
    only where SFT beats the answer prior)."""
    rl_time = r.budget("rl")
    t0 = time.perf_counter()
    envs = r.scfg.rl_envs
    if not envs:
        probe = evaluate(r.model, r.tok, r.proc, tasks, items=RL_PROBE_ITEMS, seconds=RL_PROBE_SHARE * rl_time,
                         data=r.scfg.data, timed=not r.fixed, label="RL candidate")
        r.report["sft_probe"] = probe
        envs = choose_rl_envs(probe, tasks)
    r.todo.remove("rl")
    if envs:
        r.report["stages"]["rl"] = run_rl(r.model, r.tok, r.proc, envs, seconds=rl_time - (time.perf_counter() - t0),
                                          data=r.scfg.data, seed=r.scfg.seed, heldout_items=rl_heldout_items(r.scfg),
                                          steps=r.steps("rl"), settings=r.scfg.train.get("rl"))
    else:
        r.report["rl_skipped"] = (f"no task's SFT score both beat its answer prior by 2 standard errors and "
                                  f"left room to learn (at most {RL_CEILING})")


def _finish(r: RunState) -> None:
    """Saves the model into OUT/model, then writes report.md and report.json."""
    model_dir = r.out / "model"
    save_model(r.model, model_dir)
    r.tok.save_pretrained(model_dir)
    report = r.report
    report["model_dir"] = str(model_dir)
    report["wall_seconds"] = r.clock.elapsed()
    report["warnings"] = _warnings(report, r.scfg)
    write_report(report, r.out)
    report["wall_seconds"] = r.clock.elapsed()
    write_json(report, r.out)
    for w in report["warnings"]:
        log(f"warning: {w}")
    log(f"done in {report['wall_seconds']:.0f}s (budget {r.scfg.minutes * 60:.0f}s): {r.out / 'report.md'}")


def _warnings(report: dict, scfg: SpeedrunConfig) -> list[str]:
    """Plain-language warnings about what makes this run's numbers weak."""
    out = []
    for name, st in report["stages"].items():
        out += _stage_warnings(name, st)
    if "eval" in scfg.stages:
        out += _eval_warnings(report, scfg)
    if "rl" in scfg.stages and "rl" not in report["stages"]:
        out.append("RL was skipped: " + report.get("rl_skipped", "no task qualified."))
    wall = report.get("wall_seconds")
    if not scfg.steps and wall is not None and wall > scfg.minutes * 60:
        out.append(f"The run took {wall:.0f} s, over its {scfg.minutes * 60:.0f} s budget.")
    return out


def _stage_warnings(name: str, st: dict) -> list[str]:
    out = []
    if st.get("steps", 0) < MIN_STEPS:
        out.append(f"The {name} stage ran only {st.get('steps', 0)} steps (fewer than {MIN_STEPS}): "
                   "its numbers say little. Give the run more minutes or a quieter machine.")
    loss = st.get("loss") or []
    k = max(1, len(loss) // 10)  # single-step losses of mixed batches are noisy: compare tenths
    first, last = sum(loss[:k]) / k if loss else 0.0, sum(loss[-k:]) / k if loss else 0.0
    if name != "rl" and len(loss) >= 2 and last >= first:
        out.append(f"The {name} loss did not fall: its first {k} steps averaged {first:.3f}, "
                   f"its last {k} {last:.3f}.")
    if st.get("dropped_documents"):
        out.append(f"The {name} stage dropped {st['dropped_documents']} documents longer than its rows.")
    return out


def _eval_warnings(report: dict, scfg: SpeedrunConfig) -> list[str]:
    out = []
    ev = report.get("eval", {})
    for t in report.get("tasks", []):
        if t not in ev:
            out.append(f"Task {t} was not evaluated: the evaluation ran out of time.")
        elif ev[t]["items"] < min(scfg.eval_items, ev[t].get("asked_items", scfg.eval_items)):
            out.append(f"Task {t} was evaluated on {ev[t]['items']} of {ev[t]['asked_items']} items "
                       "(time ran out): its score is noisier.")
    return out
