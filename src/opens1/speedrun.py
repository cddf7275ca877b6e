"""`opens1 speedrun`: a tiny Intern-S1 trained end to end from real data on a CPU, with a report.

    opens1 speedrun                          # ~30 minutes on 2 CPU cores, embedded real data
    opens1 speedrun --minutes 3              # smoke test
    opens1 speedrun --data ../shared/data    # the full real data set, same layout

Stages, each with a share of the wall-clock budget (never exceeded: every stage stops on
time, evaluation included, and the report is written inside the budget):

    tokenizer   the bundled dynamic tokenizer (its domain vocabularies are trained with
                `opens1 tokenizer train` when missing)
    model       the `tiny` preset: a 4-layer MoE decoder (8 experts, top-2) with an InternViT
                tower and the time-series tower, vocabulary sized to the tokenizer
    pretrain    text: GSM8K/MATH prose, SMILES, QM9 property sentences, reactions, proteins, DNA
    multimodal  RDKit molecule drawings with their SMILES/properties, MIT-BIH ECG windows with
                beat labels, and text (loss on text tokens, square-averaged per sample)
    sft         chat-formatted tasks from `opens1.envs` (loss on assistant tokens only)
    rl          OREAL + KL-Cov on the environments where the SFT model already scores above zero
    eval        greedy decoding on each task's held-out split
    report      OUT/report.md with PNG plots, OUT/report.json, OUT/model (load_model, load_tokenizer
                and `opens1 serve` read it)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opens1.cli_util import HelpFormatter, add_list_argument, check_dir, check_env_names

# Tasks the SFT stage trains on and the evaluation scores (held-out split).
SFT_TASKS = [
    "chem/formula", "chem/mol_weight", "chem/qm9_gap", "chem/reaction_product", "bio/gc_content",
    "ecg/beat_label", "math/gsm8k", "chem/atom_count", "chem/ring_count", "chem/aromatic_rings",
    "bio/reverse_complement", "logic/counting", "logic/sorting",
]
# RL candidates: short answers a tiny model can reach by sampling (RL needs groups with mixed outcomes).
RL_CANDIDATES = ["chem/ring_count", "chem/aromatic_rings", "chem/atom_count", "logic/counting", "ecg/beat_label"]

# Share of the budget per stage; what is left is the evaluation and report reserve.
# The final evaluation is short (greedy, answers of a few tokens): 20 s of a 20-minute run.
STAGE_SHARE = {"pretrain": 0.28, "multimodal": 0.08, "sft": 0.26, "rl": 0.24}
EVAL_SHARE = 0.04


@dataclass
class SpeedrunConfig:
    minutes: float = 30.0
    out: str = "runs/speedrun"
    data: str | None = None  # None: the embedded real subset
    preset: str = "tiny"
    seed: int = 0
    seq_len: int = 256
    micro_batch_size: int = 8
    eval_items: int = 0  # per task; 0: scaled with the budget
    rl_envs: list[str] = field(default_factory=list)  # empty: chosen from RL_CANDIDATES after SFT
    threads: int = 0  # torch threads; 0: all cores


class Clock:
    """The wall-clock budget. Stages ask for their share of what is left, so an early stage
    that finishes early hands its time to the later ones. A final reserve (saving the model
    and writing the report) is never handed out, so the whole run ends inside the budget."""

    def __init__(self, minutes: float):
        self.t0 = time.perf_counter()
        self.total = minutes * 60.0
        self.reserve = max(8.0, 0.04 * self.total)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return max(0.0, self.total - self.elapsed())

    def share(self, stage: str, remaining_stages: list[str]) -> float:
        """Seconds for `stage`: its share of the time left (less the final reserve), in
        proportion to the stages still to run."""
        weights = {**STAGE_SHARE, "eval": EVAL_SHARE}
        todo = sum(weights[s] for s in remaining_stages if s in weights)
        return max(0.0, self.left() - self.reserve) * weights[stage] / todo


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def log(msg: str) -> None:
    print(f"[speedrun] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- stages


def load_or_train_tokenizer(out: Path, data):
    """The bundled tokenizer; if its vocabularies are missing, train them into OUT/tokenizer."""
    import opens1

    try:
        return opens1.load_tokenizer()
    except FileNotFoundError as e:
        log(f"bundled tokenizer missing ({e}); training the vocabularies")
        from opens1.tokenizer.cli import main as tok_main

        tok_main(["train", "--out", str(out / "tokenizer"), *(["--data", str(data)] if data else []), "--fast"])
        return opens1.load_tokenizer(out / "tokenizer")


def build_model(preset: str, tok, seed: int):
    import torch

    from opens1.config import get_preset
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.processor import Processor, configure

    cfg = get_preset(preset)
    cfg.text.vocab_size = (len(tok) + 63) // 64 * 64  # rows for every token id, padded for matmul shapes
    cfg.text.eos_token_id = tok.eos_token_id
    cfg.text.pad_token_id = tok.pad_token_id
    configure(tok, cfg)
    torch.manual_seed(seed)
    model = S1ForConditionalGeneration(cfg)
    return model, Processor(tok, cfg)


def run_train_stage(name: str, model, tok, proc, scfg: SpeedrunConfig, seconds: float, out: Path,
                    samples: list | None = None, sources: str | None = None) -> dict:
    """One supervised stage (pretrain / multimodal / sft) inside `seconds`; returns its report entry."""
    from opens1.data.sources import build_documents, load_mixture
    from opens1.train.config import get_train_preset
    from opens1.train.data import build_stream
    from opens1.train.trainer import Trainer

    t0 = time.perf_counter()
    per_source = int(min(400, max(20, 15 * scfg.minutes)))  # samples per source scale with the budget
    cfg = get_train_preset(name, seq_len=scfg.seq_len, micro_batch_size=scfg.micro_batch_size,
                           samples_per_source=per_source,
                           data_root=scfg.data, seed=scfg.seed, out_dir=str(out / "stages" / name),
                           ckpt_every=0, progress=False, tensorboard=False, max_steps=10_000)
    if samples is None:
        samples = load_mixture(sources or cfg.sources, scfg.data, samples_per_unit=cfg.samples_per_source, seed=scfg.seed)
    docs = build_documents(samples, cfg.stage, tok, proc)
    stream, hashes = build_stream(cfg, tok, proc, docs=docs)
    # Calibrate: time a couple of steps, then size the schedule (WSD needs its length up front)
    # so that warm-up, stable phase and decay all fit in the time left.
    left = seconds - (time.perf_counter() - t0)
    # The probe's steps are real updates of a fresh AdamW, so they follow the stage's warm-up
    # like the steps after them (they used to run at the full learning rate); at least 10
    # warm-up steps, so two probe steps stay small where a stage's warm-up is short (SFT: 5). The multimodal
    # stage's early loss rise (e.g. 4.9 -> 10.0) is its data order, not these steps: it is the
    # same with lr 1e-9.
    probe = Trainer(model, cfg.replace(max_steps=10_000, warmup_steps=max(cfg.warmup_steps, 10)), stream,
                    cfg.out_dir, resume=False, data_hashes=hashes)
    tp = time.perf_counter()
    probe_res = probe.fit(max_steps=2)
    per_step = (time.perf_counter() - tp) / 2
    left = seconds - (time.perf_counter() - t0)
    steps = max(1, int(left * 0.95 / per_step))
    cfg = cfg.replace(max_steps=steps, warmup_steps=max(1, min(cfg.warmup_steps, steps // 10)),
                      batch_warmup_steps=min(cfg.batch_warmup_steps, steps // 5))
    trainer = Trainer(model, cfg, stream, cfg.out_dir, resume=False, data_hashes=hashes,
                      optimizer=probe.optimizer)
    res = trainer.fit(max_steps=steps, max_seconds=max(1.0, left))
    losses = list(probe_res.losses) + list(res.losses)
    entry = {"loss": [float(x) for x in losses], "steps": res.steps + probe_res.steps,
             "tokens": res.tokens + probe_res.tokens, "seconds": time.perf_counter() - t0,
             "documents": len(docs), "planned_steps": steps, "stopped": res.stopped,
             "sources": sorted({d.source for d in docs if getattr(d, "source", None)})}
    log(f"{name}: {entry['steps']} steps, {entry['tokens']} tokens, loss {losses[0]:.3f} -> {losses[-1]:.3f} "
        f"in {entry['seconds']:.0f}s")
    return entry


def sft_samples(data, per_env: int, tasks: list[str]) -> list:
    from opens1.data.sources import read_envs

    live = []
    for t in tasks:
        try:
            live.append(t)
            next(iter(read_envs(data, per_env=1, names=[t])))
        except (FileNotFoundError, ValueError, StopIteration):
            live.pop()
    return list(read_envs(data, per_env=per_env, names=live)), live


def evaluate(model, tok, proc, tasks: list[str], items: int, seconds: float, data) -> dict:
    """Greedy held-out scores per task, batched, inside `seconds` (tasks share the time; a task
    stops between batches when its share is spent, and reports how many items it scored)."""
    from opens1.envs import get_env
    from opens1.infer.sampling import SamplingParams
    from opens1.rl.rollout import LocalEngine, response_text

    engine = LocalEngine(model, pad_token_id=tok.pad_token_id, share=True)
    greedy = SamplingParams(max_new_tokens=48, temperature=0.0, stop_token_ids=(tok.eos_token_id,), vocab_limit=len(tok))
    deadline = time.perf_counter() + seconds
    out = {}
    for k, task in enumerate(tasks):
        env = get_env(task, data_root=data)
        task_deadline = time.perf_counter() + (deadline - time.perf_counter()) / (len(tasks) - k)
        n = min(items, env.num_cases("heldout"))
        scores: list[float] = []
        for start in range(0, n, 8):
            # every task gets at least one batch while the stage has time; then its own share
            now = time.perf_counter()
            if now >= deadline or (scores and now >= task_deadline):
                break
            cases = [env.case(i, split="heldout") for i in range(start, min(start + 8, n))]
            gens = engine.generate([proc(c.messages(), enable_thinking=False) for c in cases], 1, greedy, seed=0)
            scores += [float(env.verify(response_text(tok, g[0]), c).score) for c, g in zip(cases, gens)]
        if scores:
            out[task] = {"score": sum(scores) / len(scores), "items": len(scores)}
    return out


def run_rl(model, tok, proc, envs: list[str], seconds: float, data, seed: int, heldout_items: int) -> dict:
    from opens1.rl.trainer import RLConfig, RLTrainer

    # 40 new tokens: the chem tasks' worked answers are 26-36 tokens, and a cut answer scores 0.
    # 8 prompts x 8 rollouts, lr 3e-4, 4 mini-batch steps per batch with KL-Cov: from one 20-minute
    # run's SFT checkpoint, 120 s of RL gave greedy held-out +0.04 with 4 prompts at lr 2e-4, +0.09
    # with 8 prompts at 3e-4 (n=400); lr 1e-3 collapsed the ECG task and greedy reward fell to 0.09.
    cfg = RLConfig(envs=envs, data_root=data, prompts_per_step=8, rollouts_per_prompt=8, max_new_tokens=40,
                   temperature=1.0, lr=3e-4, mini_batches=4, heldout_items=heldout_items, seed=seed)
    trainer = RLTrainer(model, tok, proc, cfg)
    t0 = time.perf_counter()
    # held-out reward before and after on the same items, greedy and sampled (one sample per
    # item at the rollout temperature, fixed seeds). On a tiny model RL mostly sharpens the
    # sampled policy toward its greedy answers: bench/rl_entropy.py measured sampled held-out
    # reward 0.12 -> 0.36 (n=300) while the greedy argmax, and its reward, did not move.
    # The greedy "before" pass may take 12% of the stage, the sampled one as long; "after" the same.
    before, n = trainer.heldout_reward(batch=16, deadline=t0 + 0.12 * seconds)
    by_env_before = trainer.heldout_by_env
    before_s, n = trainer.heldout_reward(items=n, batch=16, temperature=cfg.temperature)
    eval_time = time.perf_counter() - t0
    res = trainer.train(max_seconds=max(0.0, seconds - 1.15 * eval_time - (time.perf_counter() - t0)))
    after, _ = trainer.heldout_reward(items=n, batch=16)
    by_env_after = trainer.heldout_by_env
    after_s, _ = trainer.heldout_reward(items=n, batch=16, temperature=cfg.temperature)
    prior, prior_by_env = trainer.answer_prior_reward(n)  # always the most common answer
    se = math.sqrt((before * (1 - before) + after * (1 - after)) / max(1, n))
    se_s = math.sqrt((before_s * (1 - before_s) + after_s * (1 - after_s)) / max(1, n))
    log(f"rl: {res.steps} steps on {envs}; held-out reward greedy {before:.3f} -> {after:.3f} (se of diff {se:.3f}), "
        f"sampled {before_s:.3f} -> {after_s:.3f} (se {se_s:.3f}), n={n}; answer prior {prior:.3f}")
    return {"loss": [h.get("bc_loss", 0.0) + h.get("pg_loss", 0.0) for h in res.history if "entropy" in h],
            "reward": res.curve("reward_mean"), "entropy": res.curve("entropy"),
            "steps": res.steps, "tokens": res.tokens, "seconds": time.perf_counter() - t0,
            "envs": envs, "heldout_reward_before": before, "heldout_reward_after": after,
            "heldout_items": n, "stderr_of_difference": se,
            "heldout_by_env_before": by_env_before, "heldout_by_env_after": by_env_after,
            "heldout_sampled_before": before_s, "heldout_sampled_after": after_s, "stderr_of_difference_sampled": se_s,
            "heldout_answer_prior": prior, "heldout_answer_prior_by_env": prior_by_env}


# ---------------------------------------------------------------- the whole run


def run(scfg: SpeedrunConfig) -> dict:
    import torch

    clock = Clock(scfg.minutes)
    if scfg.threads:
        torch.set_num_threads(scfg.threads)
    out = Path(scfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages_todo = ["pretrain", "multimodal", "sft", "rl", "eval"]
    report: dict = {"config": asdict(scfg), "git_revision": git_revision(), "stages": {},
                    "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "python": platform.python_version(), "torch": torch.__version__}}
    tok = load_or_train_tokenizer(out, scfg.data)
    model, proc = build_model(scfg.preset, tok, scfg.seed)
    report["model"] = {"preset": scfg.preset, "parameters": sum(p.numel() for p in model.parameters()),
                       "vocab_size": model.config.text.vocab_size, "config": model.config.to_dict()}
    log(f"model {scfg.preset}: {report['model']['parameters'] / 1e6:.2f}M parameters, vocab {len(tok)}")

    report["stages"]["pretrain"] = run_train_stage(
        "pretrain", model, tok, proc, scfg, clock.share("pretrain", stages_todo), out)
    stages_todo.remove("pretrain")
    report["stages"]["multimodal"] = run_train_stage(
        "multimodal", model, tok, proc, scfg, clock.share("multimodal", stages_todo), out)
    stages_todo.remove("multimodal")
    # documents scale with the budget: building 20k chat examples would eat a 3-minute run
    samples, tasks = sft_samples(scfg.data, per_env=int(min(2000, max(20, 40 * scfg.minutes))), tasks=SFT_TASKS)
    report["stages"]["sft"] = run_train_stage(
        "sft", model, tok, proc, scfg, clock.share("sft", stages_todo), out, samples=samples)
    stages_todo.remove("sft")

    items = scfg.eval_items or max(8, min(100, int(scfg.minutes * 3)))
    rl_time = clock.share("rl", stages_todo)
    t_rl = time.perf_counter()
    # RL only on environments where the SFT model already scores above zero (a probe on train cases).
    envs = scfg.rl_envs or choose_rl_envs(model, tok, proc, scfg.data, seconds=rl_time * 0.15)
    stages_todo.remove("rl")
    if envs:
        report["stages"]["rl"] = run_rl(model, tok, proc, envs, rl_time - (time.perf_counter() - t_rl),
                                        scfg.data, scfg.seed, heldout_items=rl_heldout_items(scfg))
    report["eval"] = evaluate(model, tok, proc, tasks, items, clock.share("eval", stages_todo), scfg.data)
    stages_todo.remove("eval")

    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    report["model_dir"] = str(model_dir)
    report["wall_seconds"] = clock.elapsed()
    from opens1.report import write_report

    write_report(report, out)
    report["wall_seconds"] = clock.elapsed()
    tmp = out / "report.json.tmp"  # atomic: a reader never sees half a report
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "report.json")
    log(f"done in {report['wall_seconds']:.0f}s: {out / 'report.md'}")
    return report


def rl_heldout_items(scfg: SpeedrunConfig) -> int:
    """Held-out items for RL's before/after comparison: 20 per minute of budget, 16 to 400.
    A pass over 200 short answers takes about 2 s, and the standard error of the difference
    shrinks with sqrt(n): at n=400 and rewards near 0.5 it is 0.035."""
    return scfg.eval_items or max(16, min(400, int(scfg.minutes * 20)))


def choose_rl_envs(model, tok, proc, data, seconds: float) -> list[str]:
    """RL candidates on which the SFT model scores above zero when sampling (a quick train-split probe)."""
    from opens1.envs import get_env
    from opens1.infer.sampling import SamplingParams
    from opens1.rl.rollout import LocalEngine, response_text

    engine = LocalEngine(model, pad_token_id=tok.pad_token_id, share=True)
    sampling = SamplingParams(max_new_tokens=40, temperature=1.0, stop_token_ids=(tok.eos_token_id,), vocab_limit=len(tok))
    chosen, t0 = [], time.perf_counter()
    for k, name in enumerate(RL_CANDIDATES):
        if time.perf_counter() - t0 > seconds:
            break
        env = get_env(name, data_root=data)
        cases = [env.case(i, split="train") for i in range(4)]
        gens = engine.generate([proc(c.messages(), enable_thinking=False) for c in cases], 4, sampling, seed=k)
        score = sum(env.verify(response_text(tok, r), c).score
                    for c, g in zip(cases, gens) for r in g) / 16
        log(f"rl probe {name}: sampled reward {score:.2f}")
        if 0 < score < 1:
            chosen.append(name)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="opens1 speedrun", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget, evaluation and report included")
    p.add_argument("--out", default="runs/speedrun")
    p.add_argument("--data", default=None, help="data root in the ../shared/data layout (default: embedded subset)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-items", type=int, default=0)
    add_list_argument(p, "--rl-envs", help="RL environments, comma or space separated (default: chosen after SFT)")
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be positive")
    check_env_names(args.rl_envs)  # a typo stops here, not after pretraining
    if args.data is not None:
        check_dir(args.data, "data root")
    scfg = SpeedrunConfig(minutes=args.minutes, out=args.out, data=args.data, preset=args.preset, seed=args.seed,
                          eval_items=args.eval_items, rl_envs=args.rl_envs)
    run(scfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
