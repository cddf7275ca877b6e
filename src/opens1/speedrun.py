"""`opens1 speedrun`: a tiny Intern-S1 trained end to end from real data on a CPU, with a report.

    opens1 speedrun                          # ~30 minutes on 2 CPU cores, embedded real data
    opens1 speedrun --minutes 3              # smoke test
    opens1 speedrun --steps sft=3000,rl=200  # fixed work instead of a time budget (reproducible)
    opens1 speedrun --tasks chem/ring_count --stages sft,eval --minutes 2   # a one-task probe
    opens1 speedrun --data ../shared/data    # the full real data set, same layout
    opens1 speedrun --build-tokenizer src/opens1/tokenizer/assets/tiny --data ../shared/data

Stages, each with a share of the wall-clock budget (measured from process start; every
stage stops on time, evaluation included, and the report is written inside the budget):

    tokenizer   the `tiny` preset's own small tokenizer (assets/tiny: a 1,024-token byte-level
                BPE for prose, one token per character for SMILES and DNA), so that the
                embedding is a small part of the model and a ring-closure digit or a base is
                a token of its own; trained into OUT/tokenizer when missing
    model       the `tiny` preset: a 4-layer MoE decoder (8 experts, top-2) with tied
                embeddings, an InternViT tower and the time-series tower
    pretrain    text: GSM8K prose, SMILES, QM9 property sentences, DNA (a short stage)
    multimodal  RDKit molecule drawings, MIT-BIH ECG windows, text (a short stage)
    sft         the speedrun tasks from `opens1.envs` (loss on the answer only), in the same
                chat format evaluation and RL use (no thinking system prompt)
    rl          OREAL + KL-Cov on the tasks where the SFT model already beats the answer prior
    eval        greedy decoding on each task's held-out split, beside its answer prior (the
                best constant answer) and the answer's cross-entropy against the prior's entropy
    report      OUT/report.md with PNG plots, OUT/report.json, OUT/model (load_model,
                load_tokenizer and `opens1 serve` read it)
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

from opens1.cli.util import HelpFormatter, add_list_argument, check_dir, check_env_names

# The tasks SFT trains on and the evaluation scores, each one a scientist would recognise
# and each answer-balanced: ring, aromatic-ring and heteroatom counts of real drug-like
# molecules, G+C counts of real genes, and the dominant frequency of a sensor trace (the
# time-series tower's task).
TASKS = ["chem/ring_count", "chem/aromatic_rings", "chem/atom_count", "bio/gc_count", "physics/signal_frequency"]
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
TINY_TOKENIZER = Path(__file__).resolve().parent / "tokenizer" / "assets" / "tiny"


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


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 where unavailable), so that the
    command line's budget includes interpreter start-up and imports."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return 0.0


def pick_threads(trials: int = 3, seconds: float = 0.15) -> tuple[int, float]:
    """(torch threads, measured speed-up of all cores over one) for this machine now. On a
    2-core machine that another process keeps busy, 2 threads made SFT 10x slower than 1
    (692 vs 6,457 tokens/s, measured): threads that wait for a busy core stall every op.
    So the model's typical matmuls are timed with 1 thread and with all cores, best of
    `trials` each, and all cores are used only where they are at least 1.3x faster."""
    import torch

    cores = os.cpu_count() or 1
    if cores == 1:
        return 1, 1.0
    a, b, c = torch.randn(2048, 128), torch.randn(128, 384), torch.randn(2048, 384)  # [tokens, hidden] x MLP

    def rate(n: int) -> float:
        torch.set_num_threads(n)
        a @ b
        k, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            a @ b
            c @ b.T
            k += 1
        return k / (time.perf_counter() - t)

    one = many = 0.0
    for _ in range(trials):
        one, many = max(one, rate(1)), max(many, rate(cores))
    ratio = many / max(one, 1e-9)
    n = cores if ratio >= 1.3 else 1
    torch.set_num_threads(n)
    return n, ratio


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def log(msg: str) -> None:
    print(f"[speedrun] {msg}", file=sys.stderr, flush=True)


def _duration(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ---------------------------------------------------------------- tokenizer


def tokenizer_corpus(root=None, tasks: list[str] | None = None, per_task: int = 500):
    """Prose for the tiny base BPE: the tokenizer trainer's offline prose, plus the prompts
    and answers of the speedrun tasks' train split (their template words become single
    tokens, which shortens every training example)."""
    from opens1.envs import get_env
    from opens1.tokenizer.train import prose_corpus

    yield from prose_corpus(root)
    for name in tasks or TASKS:
        env = get_env(name, data_root=root)
        for i in range(min(per_task, env.num_cases("train"))):
            case = env.case(i, "train")
            for m in case.messages():
                content = m["content"]
                yield content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
            yield env.sft_response(case) or ""


def train_tiny_tokenizer(out: str | Path, root=None, base_vocab: int = 1024):
    """The `tiny` preset's tokenizer: a small byte-level BPE for prose and one token per
    character for SMILES and DNA (SentencePiece `char` models with byte fallback, trained
    by opens1.tokenizer.train), no protein or IUPAC vocabularies. Returns the tokenizer."""
    from opens1.tokenizer.dynamic import DynamicTokenizer
    from opens1.tokenizer.train import (TrainConfig, dna_corpus, smiles_corpus, train_base_bpe,
                                        train_sentencepiece)

    t0 = time.perf_counter()
    base = train_base_bpe(list(tokenizer_corpus(root)), base_vocab)
    cfg = TrainConfig(n_smiles=20_000, n_qm9=5_000, n_reactions=3_000, n_selfies=0, augment=0.3)
    # a char model's size is its alphabet (+ 256 byte pieces); the size asked for is a bound
    smiles = train_sentencepiece(smiles_corpus(root, cfg), 400, 1, "char")
    dna = train_sentencepiece(dna_corpus(root), 300, 1, "char")
    tok = DynamicTokenizer.from_parts(base, {"smiles": smiles, "dna": dna}, provenance={
        "preset": "tiny", "data_root": str(root), "base_vocab": base_vocab, "smiles": "char", "dna": "char",
        "built_by": "opens1 speedrun --build-tokenizer"})
    tok.save_pretrained(out)
    log(f"tokenizer: {tok!r} in {time.perf_counter() - t0:.0f}s -> {out}")
    return tok


def load_or_train_tokenizer(out: Path, data, preset: str = "tiny"):
    """The `tiny` preset's bundled tokenizer (other presets: the default one); if it is
    missing, train it into OUT/tokenizer."""
    import opens1

    if preset != "tiny":
        return opens1.load_tokenizer()
    try:
        return opens1.load_tokenizer(TINY_TOKENIZER)
    except FileNotFoundError as e:
        log(f"bundled tiny tokenizer missing ({e}); training it")
        return train_tiny_tokenizer(out / "tokenizer", data)


# ---------------------------------------------------------------- model


def build_model(preset: str, tok, seed: int):
    import torch

    from opens1.config import get_preset
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.processor import Processor, configure

    cfg = get_preset(preset)
    rows = (len(tok) + 63) // 64 * 64  # rows for every token id, padded for matmul shapes
    if rows != cfg.text.vocab_size:
        if preset == "tiny":  # the preset is sized for its bundled tokenizer
            log(f"tokenizer has {len(tok)} ids: embedding resized from {cfg.text.vocab_size} to {rows} rows")
        cfg.text.vocab_size = rows
    cfg.text.eos_token_id = tok.eos_token_id
    cfg.text.pad_token_id = tok.pad_token_id
    configure(tok, cfg)
    torch.manual_seed(seed)
    model = S1ForConditionalGeneration(cfg)
    return model, Processor(tok, cfg)


# ---------------------------------------------------------------- supervised stages


class StepLog:
    """Per-step progress lines in the terminal (at most one every `every` seconds, and the
    last): loss, tokens per second, the stage's ETA and the run's clock."""

    def __init__(self, stage: str, planned: int, clock: Clock | None, every: float = 5.0, offset: int = 0):
        self.stage, self.planned, self.clock, self.every, self.offset = stage, planned, clock, every, offset
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tokens = 0

    def __call__(self, m: dict) -> None:
        step = m["step"] + self.offset
        self.tokens += m.get("step_tokens", 0)
        now = time.perf_counter()
        if now - self.last < self.every and step < self.planned:
            return
        self.last = now
        dt = now - self.t0
        run = f"  run {_duration(self.clock.elapsed())}/{_duration(self.clock.total)}" if self.clock else ""
        plan = f"/{self.planned}" if self.planned else ""
        eta = f"  ETA {_duration(dt / max(step - self.offset, 1) * max(self.planned - step, 0))}" if self.planned else ""
        log(f"{self.stage:10s} step {step:5d}{plan}  loss {m['loss']:.4f}  "
            f"{self.tokens / max(dt, 1e-9):6.0f} tok/s{eta}{run}")


def run_train_stage(name: str, model, tok, proc, scfg: SpeedrunConfig, seconds: float, out: Path,
                    samples: list | None = None, sources: str | None = None, *, steps: int = 0,
                    clock: Clock | None = None) -> dict:
    """One supervised stage (pretrain / multimodal / sft) inside `seconds`, or exactly
    `steps` optimizer steps when given; returns its report entry."""
    from opens1.data.sources import build_documents, load_mixture
    from opens1.train.config import get_train_preset
    from opens1.data.stream import build_stream
    from opens1.train.trainer import Trainer

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
    losses: list[float] = []
    if steps:
        res = trainer.fit(max_steps=steps)
        losses += res.losses
    else:
        # Size the schedule from the measured step time: 2 untimed steps (first-call overheads),
        # 4 timed ones, a first quarter of the plan, then the rest re-planned from the rate of
        # that quarter (a shared machine's speed drifts). The WSD schedule is flat until its
        # decay, so moving its end during the flat part changes nothing already done.
        def fit(until: int, deadline: float) -> None:
            losses.extend(trainer.fit(max_steps=until, max_seconds=max(0.5, deadline - time.perf_counter())).losses)

        end = t0 + seconds
        fit(2, end)
        tp, s0 = time.perf_counter(), trainer.step
        fit(6, end)
        for segment in (0.25, 0.5, 1.0):
            per_step = (time.perf_counter() - tp) / max(1, trainer.step - s0)
            planned = trainer.step + max(1, int((end - time.perf_counter()) * 0.97 / per_step))
            trainer.cfg = trainer.cfg.replace(max_steps=planned)
            steplog.planned = planned
            tp, s0 = time.perf_counter(), trainer.step
            fit(trainer.step + max(1, int(segment * (planned - trainer.step))), end)
            if time.perf_counter() >= end:
                break
    entry = {"loss": [float(x) for x in losses], "steps": trainer.step, "tokens": trainer.tokens,
             "seconds": time.perf_counter() - t0, "documents": len(docs), "dropped_documents": stream.dropped,
             "planned_steps": trainer.cfg.max_steps, "seq_len": cfg.seq_len, "lr": cfg.lr,
             "sources": sorted({d.source for d in docs if getattr(d, "source", None)})}
    log(f"{name}: {entry['steps']} steps, {entry['tokens']:,} tokens, loss {losses[0]:.3f} -> {losses[-1]:.3f} "
        f"in {entry['seconds']:.0f}s")
    return entry


def _series_of(case) -> tuple | None:
    """(values, sampling rate) of the first time-series part of a case's prompt, or None."""
    for m in case.messages():
        for part in m["content"] if isinstance(m["content"], list) else []:
            if part.get("type") == "time_series":
                return part["time_series"]["values"], part["time_series"].get("sampling_rate")
    return None


def warm_up_series_encoder(model, tasks: list[str], data, seconds: float, *, seed: int = 0,
                           steps: int = 0, batch: int = 16) -> dict | None:
    """Supervised warm-up of the time-series tower and its projector on the train split of
    the time-series tasks: a linear head on the mean of the projected series tokens
    predicts the task's answer (cross-entropy), for `seconds` (or `steps`); the head is then
    dropped. The head reads batch-standardised features: on raw ones the loss sat at
    log(classes) for 75 to 300+ steps, or left it and collapsed back, depending on the seed
    (lr 1e-3-2e-3, with or without warm-up); standardised, all 4 seeds tried fell from the
    first steps (1.8 -> 0.2-0.3 in 200 steps). Past its time the warm-up goes on until the loss
    is below half of log(classes), for at most twice its time. Why the warm-up: at initialisation the projected series tokens of two different traces
    differ by ~5% of their norm (the common part: positions, biases), and a language model
    reading such nearly constant tokens stayed at the answer prior for 240 SFT steps
    (frozen or trained tower alike), while after 200 steps of this warm-up it learned the
    dominant-frequency task within 80 steps (answer cross-entropy 2.6 -> 0.3 bits).
    Encoders pretrained before alignment are the usual recipe (Intern-S1's time-series
    encoder is a pretrained one). Returns the stage's report entry, or None without a
    time-series task."""
    import torch
    import torch.nn.functional as F

    from opens1.envs import get_env
    from opens1.processing.series import preprocess_series

    if model.ts_tower is None:
        return None
    t0 = time.perf_counter()
    xs, labels, names = [], [], []
    for task in tasks:
        env = get_env(task, data_root=data)
        first = env.case(0, "train")
        if _series_of(first) is None:
            continue
        names.append(task)
        for i in range(min(4000, env.num_cases("train"))):
            case = env.case(i, "train")
            values, rate = _series_of(case)
            x, sr = preprocess_series(values, rate)  # [T, C], z-scored: what the processor feeds the tower
            xs.append((x, sr))
            labels.append(f"{task}|{case.reference!r}")
    if not xs:
        return None
    t0 = time.perf_counter()  # the budget is for training: the data above is cached for SFT anyway
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(l) for l in labels])
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(model.config.text.hidden_size, affine=False),
                               torch.nn.Linear(model.config.text.hidden_size, len(classes)))
    params = [*model.ts_tower.parameters(), *model.ts_projector.parameters(), *head.parameters()]
    from opens1.train.trainer import adamw

    lr, WARMUP_STEPS = ENCODER_LR, 30
    opt = adamw(params, lr=lr, weight_decay=0.0)
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
            g["lr"] = lr * min(1.0, (len(losses) + 1) / WARMUP_STEPS)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        ema = 0.9 * ema + 0.1 * losses[-1]
    entry = {"loss": losses, "steps": len(losses), "tokens": 0, "seconds": time.perf_counter() - t0,
             "tasks": names, "examples": len(xs), "classes": len(classes)}
    log(f"series encoder warm-up on {names}: {len(losses)} steps, loss {losses[0]:.3f} -> "
        f"{sum(losses[-10:]) / len(losses[-10:]):.3f} in {entry['seconds']:.0f}s")
    return entry


def sft_samples(data, per_env: int, tasks: list[str]) -> tuple[list, list[str]]:
    """SFT chats for the tasks whose data exists under `data`: (samples, the tasks used)."""
    from opens1.data.sources import read_envs
    from opens1.envs import get_env

    live = []
    for t in tasks:
        try:
            get_env(t, data_root=data)
        except (FileNotFoundError, ValueError) as e:
            log(f"task {t} skipped: {e}")
            continue
        live.append(t)
    return list(read_envs(data, per_env=per_env, names=live)), live


# ---------------------------------------------------------------- evaluation


def greedy_texts(engine, tok, prompts: list[dict], sampling) -> list[str]:
    """One response text per prompt. Multimodal prompts of equal length (a task's series or
    image prompts share one template) are stacked into one batch, with their series and
    images in row order, instead of running one at a time."""
    import torch

    from opens1.infer.batch import is_multimodal
    from opens1.rl.rollout import response_text

    out: list[str | None] = [None] * len(prompts)
    text = [i for i, p in enumerate(prompts) if not is_multimodal(p)]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if is_multimodal(p):
            groups.setdefault(p["input_ids"].shape[1], []).append(i)
    jobs = [([prompts[i] for i in text], text)] if text else []
    for idx in groups.values():
        merged = {"input_ids": torch.cat([prompts[i]["input_ids"] for i in idx])}  # [B, T]
        pixels = [prompts[i]["pixel_values"] for i in idx if prompts[i].get("pixel_values") is not None]
        if pixels:
            merged["pixel_values"] = torch.cat(pixels)
        series = [s for i in idx for s in (prompts[i].get("time_series") or [])]
        if series:
            merged["time_series"] = series
            merged["sampling_rates"] = [r for i in idx for r in (prompts[i].get("sampling_rates") or [])]
        jobs.append(([merged], idx))
    for batch, idx in jobs:
        gens = engine.generate(batch, 1, sampling, seed=0)
        rows = [g[0] for g in gens] if len(batch) == len(idx) else gens[0]  # a merged prompt: one row each
        for i, r in zip(idx, rows):
            out[i] = response_text(tok, r)
    return out


def evaluate(model, tok, proc, tasks: list[str], items: int, seconds: float, data, *,
             timed: bool = True, label: str = "eval") -> dict:
    """Per task on its held-out split: the greedy score, the answer prior (best constant
    answer) on the same items with the difference and its standard error, and the answer
    cross-entropy against the answer entropy. Tasks share `seconds` (a task stops between
    batches when its share is spent, and reports how many items it scored)."""
    from opens1.envs import get_env
    from opens1.eval.harness import answer_cross_entropy, answer_entropy, answer_prior, diff_stderr
    from opens1.infer.sampling import SamplingParams
    from opens1.rl.rollout import LocalEngine

    engine = LocalEngine(model, pad_token_id=tok.pad_token_id, share=True)
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=(tok.eos_token_id,), vocab_limit=len(tok))
    deadline = time.perf_counter() + seconds
    out = {}
    for k, task in enumerate(tasks):
        env = get_env(task, data_root=data)
        share = (deadline - time.perf_counter()) / (len(tasks) - k)
        task_deadline = time.perf_counter() + 0.85 * share  # the rest: the cross-entropy pass
        cases = env.cases(items, "heldout")
        scores: list[float] = []
        for start in range(0, len(cases), 32):
            # every task gets at least one batch while the stage has time; then its own share
            now = time.perf_counter()
            if timed and (now >= deadline or (scores and now >= task_deadline)):
                break
            batch = cases[start:start + 32]
            texts = greedy_texts(engine, tok, [proc(c.messages(), enable_thinking=False) for c in batch], greedy)
            scores += [float(env.verify(t, c).score) for c, t in zip(batch, texts)]
        if not scores:
            continue
        scored = cases[:len(scores)]
        a = sum(scores) / len(scores)
        prior, prior_answer = answer_prior(env, scored)
        ce_deadline = time.perf_counter() + 0.15 * share if timed else None
        ce, ce_items = answer_cross_entropy(model, tok, proc, env, scored, deadline=ce_deadline)
        out[task] = {"score": a, "items": len(scores), "asked_items": len(cases), "prior": prior,
                     "prior_answer": prior_answer, "above_prior": a - prior,
                     "stderr": diff_stderr(a, prior, len(scores)),
                     "answer_ce_bits": ce, "answer_entropy_bits": answer_entropy(scored), "ce_items": ce_items}
        r = out[task]
        log(f"{label} {task}: {a:.3f} on {len(scores)} items, prior {prior:.3f} ({prior_answer!r}), "
            f"{r['above_prior']:+.3f} +- {r['stderr']:.3f}; answer {ce:.2f} bits vs entropy "
            f"{r['answer_entropy_bits']:.2f}")
    return out


# ---------------------------------------------------------------- RL


def run_rl(model, tok, proc, envs: list[str], seconds: float, data, seed: int, heldout_items: int,
           steps: int = 0, settings: dict | None = None) -> dict:
    from opens1.rl.trainer import RLTrainer

    cfg = rl_configs({**RL_SETTINGS, **(settings or {})}, envs=envs, data_root=data, prompts_per_step=8,
                     rollouts_per_prompt=8, max_new_tokens=16, temperature=1.0, heldout_items=heldout_items,
                     seed=seed, steps=10**9)
    trainer = RLTrainer(model, tok, proc, cfg)
    t0 = time.perf_counter()
    budget = None if steps else seconds
    # held-out reward before and after on the same items, greedy and sampled (one sample per
    # item at the rollout temperature, fixed seeds).
    b = trainer.heldout_reward(batch=32, deadline=None if steps else t0 + 0.12 * seconds)
    n = b.items
    before_s = trainer.heldout_reward(items=n, batch=32, temperature=cfg.temperature).reward
    eval_time = time.perf_counter() - t0
    res = rl_loop(trainer, steps=steps or None,
                  seconds=None if steps else max(0.0, budget - 1.15 * eval_time - (time.perf_counter() - t0)))
    a = trainer.heldout_reward(items=n, batch=32)
    after_s = trainer.heldout_reward(items=n, batch=32, temperature=cfg.temperature).reward
    p = trainer.answer_prior_reward(n)  # always the most common answer
    before, after, prior = b.reward, a.reward, p.reward
    by_env_before, by_env_after, prior_by_env = b.by_env, a.by_env, p.by_env
    se = math.sqrt((before * (1 - before) + after * (1 - after)) / max(1, n))
    se_s = math.sqrt((before_s * (1 - before_s) + after_s * (1 - after_s)) / max(1, n))
    log(f"rl: {res.steps} steps on {envs}; held-out reward greedy {before:.3f} -> {after:.3f} (se of diff {se:.3f}), "
        f"sampled {before_s:.3f} -> {after_s:.3f} (se {se_s:.3f}), n={n}; answer prior {prior:.3f}")
    by_env = {e: {"before": by_env_before[e]["reward"], "after": by_env_after.get(e, {}).get("reward"),
                  "prior": prior_by_env.get(e, {}).get("reward"), "items": by_env_before[e]["items"]}
              for e in by_env_before}
    return {"loss": [h.get("bc_loss", 0.0) + h.get("pg_loss", 0.0) for h in res.history if "entropy" in h],
            "reward": res.curve("reward_mean"), "entropy": res.curve("entropy"),
            "steps": res.steps, "tokens": res.tokens, "seconds": time.perf_counter() - t0,
            "envs": envs, "heldout_reward_before": before, "heldout_reward_after": after,
            "heldout_items": n, "stderr_of_difference": se, "heldout_by_env": by_env,
            "heldout_by_env_before": by_env_before, "heldout_by_env_after": by_env_after,
            "heldout_sampled_before": before_s, "heldout_sampled_after": after_s, "stderr_of_difference_sampled": se_s,
            "heldout_answer_prior": prior, "heldout_answer_prior_by_env": prior_by_env}


def rl_loop(trainer, *, steps: int | None, seconds: float | None, every: float = 10.0):
    """RL steps until `steps` are done or `seconds` have passed, with a progress line every
    `every` seconds (reward, groups kept, entropy)."""
    t0 = last = time.perf_counter()
    n = 0
    while (steps is None or n < steps) and (seconds is None or time.perf_counter() - t0 < seconds):
        m = trainer.step()
        n += 1
        now = time.perf_counter()
        if now - last >= every:
            last = now
            left = (steps - n) * (now - t0) / n if steps else max(0.0, seconds - (now - t0))
            log(f"rl         step {n:5d}  reward {m['reward_mean']:.3f}  kept groups {m['kept_groups']}/"
                f"{m.get('drawn_prompts', 0)}  entropy {m.get('entropy', float('nan')):.3f}  ETA {_duration(left)}")
    trainer.result.seconds += time.perf_counter() - t0
    return trainer.result


def rl_heldout_items(scfg: SpeedrunConfig) -> int:
    """Held-out items for RL's before/after comparison: 40 per minute of budget, 16 to 400.
    At n=400 and rewards near 0.5 the standard error of the difference is 0.035."""
    if scfg.steps:
        return 400
    return max(16, min(400, int(scfg.minutes * 40)))


RL_CEILING = 0.85  # a task SFT already solves this well leaves RL nothing to learn
RL_FLOOR = 0.5  # below this, most groups of 8 rollouts share one wrong answer and are dropped
# The RL recipe (--set rl.KEY=VALUE overrides any of them), chosen by single-task probes on
# chem/atom_count from one SFT model (held-out greedy 0.41, 200-240 items, se of a difference
# 0.045): lr 1e-3 fell to 0.33, 16x4 rollouts with one update per batch to 0.32, GRPO and
# temperature 0.7 to 0.38; this setting held 0.41 while the sampled reward rose 0.32 -> 0.42.
# No setting raised the greedy score in ~2 minutes (docs/rl.md). In 20-minute runs lr 3e-4 on
# two tasks made the others forget (G+C 0.91 -> 0.15, aromatic rings 0.96 -> 0.68 in the final
# evaluation), so the rate is back at 1e-4: RL must not undo what SFT built for tasks it skips.
RL_SETTINGS = dict(lr=1e-4, mini_batches=4, partial_credit=0.5, sample_rounds=3)


def choose_rl_envs(sft_eval: dict, candidates: list[str], ceiling: float = RL_CEILING,
                   floor: float = RL_FLOOR) -> list[str]:
    """The one task RL trains on. Candidates are the tasks where SFT already beats the answer
    prior by 2 standard errors (on a policy that ignores its input a binary reward only pushes
    it to the most common answer) and has room left (probe score at most `ceiling`: when every
    rollout of a prompt is right, its group carries no signal and is dropped). Of those, the
    one with the most room that is still mostly right: the lowest score at least `floor`, else
    the highest below it. The probe reads the first 100 held-out items, an answer-balanced
    prefix that scores lower than RL's 400 (20-minute seed 0: rings 0.84 in the probe, 0.96
    before RL, leaving RL +0.015 to find), so a probe near the ceiling means a task RL cannot
    move by the 0.05 the report asks for. One task, because RL's few hundred steps split over
    two tasks moved neither (20-minute seed 1: rings 0.855 -> 0.895 and atom counts 0.405 ->
    0.365 on 200 items each); sharpening a mostly-right policy is what RL does in minutes."""
    ok = [t for t in candidates if t in sft_eval and sft_eval[t]["above_prior"] > 2 * sft_eval[t]["stderr"]
          and sft_eval[t]["score"] <= ceiling]
    mostly_right = [t for t in ok if sft_eval[t]["score"] >= floor]
    if mostly_right:
        return [min(mostly_right, key=lambda t: sft_eval[t]["score"])]
    return [max(ok, key=lambda t: sft_eval[t]["score"])] if ok else []


# ---------------------------------------------------------------- the whole run


def _warnings(report: dict, scfg: SpeedrunConfig) -> list[str]:
    """Plain-language warnings about what makes this run's numbers weak."""
    out = []
    for name, st in report["stages"].items():
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
    if "eval" in scfg.stages:
        ev = report.get("eval", {})
        for t in report.get("tasks", []):
            if t not in ev:
                out.append(f"Task {t} was not evaluated: the evaluation ran out of time.")
            elif ev[t]["items"] < min(scfg.eval_items, ev[t].get("asked_items", scfg.eval_items)):
                out.append(f"Task {t} was evaluated on {ev[t]['items']} of {ev[t]['asked_items']} items "
                           "(time ran out): its score is noisier.")
    if "rl" in scfg.stages and "rl" not in report["stages"]:
        out.append("RL was skipped: " + report.get("rl_skipped", "no task qualified."))
    wall = report.get("wall_seconds")
    if not scfg.steps and wall is not None and wall > scfg.minutes * 60:
        out.append(f"The run took {wall:.0f} s, over its {scfg.minutes * 60:.0f} s budget.")
    return out


def run(scfg: SpeedrunConfig, start: float | None = None) -> dict:
    """The whole run. `start`: the time.perf_counter() value the budget counts from (the
    command line passes the process start; default now)."""
    import torch

    clock = Clock(scfg.minutes, start)
    if scfg.threads:
        torch.set_num_threads(scfg.threads)
        threads_note = "set by --threads"
    else:
        n, ratio = pick_threads()
        threads_note = f"chosen by a start-up benchmark: {os.cpu_count()} threads ran {ratio:.2f}x as fast as 1"
    out = Path(scfg.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib  # imported now, so that the report's reserve does not pay for it

    matplotlib.use("Agg")
    fixed = bool(scfg.steps)
    todo = [s for s in STAGES if s in scfg.stages]
    report: dict = {"config": asdict(scfg), "git_revision": git_revision(), "stages": {},
                    "mode": "fixed steps" if fixed else "time budget",
                    "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "threads_note": threads_note,
                                "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                                "python": platform.python_version(), "torch": torch.__version__}}
    if scfg.init_from:  # continue from a saved run's model (e.g. RL probes from one SFT model)
        import opens1

        tok = opens1.load_tokenizer(scfg.init_from)
        model = opens1.load_model(scfg.init_from)
        from opens1.processing.processor import Processor

        proc = Processor(tok, model.config)
        torch.manual_seed(scfg.seed)
    else:
        tok = load_or_train_tokenizer(out, scfg.data, scfg.preset)
        model, proc = build_model(scfg.preset, tok, scfg.seed)
    from opens1.models import count_parameters, save_model

    report["model"] = {"preset": scfg.preset, "parameters": count_parameters(model.config),
                       "active_parameters": count_parameters(model.config, active=True),
                       "vocab_size": model.config.text.vocab_size, "tokenizer_size": len(tok),
                       "tied_embeddings": model.config.text.tie_word_embeddings, "config": model.config.to_dict()}
    log(f"model {scfg.preset}: {report['model']['parameters'] / 1e6:.2f}M parameters "
        f"({report['model']['active_parameters'] / 1e6:.2f}M active), tokenizer {len(tok)} ids, "
        f"{model.config.text.vocab_size} embedding rows; {torch.get_num_threads()} threads ({threads_note})")

    def budget(stage: str) -> float:
        return clock.share(stage, todo)

    if "pretrain" in todo:
        report["stages"]["pretrain"] = run_train_stage(
            "pretrain", model, tok, proc, scfg, budget("pretrain"), out, sources=PRETRAIN_SOURCES,
            steps=scfg.steps.get("pretrain", 0) if fixed else 0, clock=clock)
        todo.remove("pretrain")
    if "multimodal" in todo:
        # image/series-text pretraining, then the time-series encoder's supervised warm-up: in
        # the other order 5 caption steps (ECG windows through the same tower, a fresh optimizer)
        # undid the warm-up, and SFT stayed at the prior on the frequency task (0.17, not 0.99)
        seconds = budget("multimodal")
        t_mm = time.perf_counter()
        report["stages"]["multimodal"] = run_train_stage(
            "multimodal", model, tok, proc, scfg, (1 - ENCODER_WARMUP) * seconds, out,
            sources=MULTIMODAL_SOURCES, steps=scfg.steps.get("multimodal", 0) if fixed else 0, clock=clock)
        warm = warm_up_series_encoder(model, scfg.tasks, scfg.data, seconds - (time.perf_counter() - t_mm),
                                      seed=scfg.seed, steps=scfg.steps.get("encoder", 200) if fixed else 0)
        if warm:
            report["stages"]["encoder"] = warm
        todo.remove("multimodal")
    # documents scale with the budget: building 30k chat examples would eat a 3-minute run
    per_env = scfg.sft_examples or int(min(8000, max(100, 300 * scfg.minutes)))
    if fixed:
        per_env = scfg.sft_examples or 8000
    samples, tasks = sft_samples(scfg.data, per_env=per_env, tasks=scfg.tasks)
    report["tasks"] = tasks
    if "sft" in todo:
        report["stages"]["sft"] = run_train_stage("sft", model, tok, proc, scfg, budget("sft"), out, samples=samples,
                                                  steps=scfg.steps.get("sft", 0) if fixed else 0, clock=clock)
        todo.remove("sft")
    if "rl" in todo:
        rl_time = budget("rl")
        t_rl = time.perf_counter()
        envs = scfg.rl_envs
        if not envs:
            # RL only where SFT beats the prior: a quick held-out read-out of the candidates
            probe = evaluate(model, tok, proc, tasks, 100, 0.12 * rl_time, scfg.data, timed=not fixed,
                             label="RL candidate")
            report["sft_probe"] = probe
            envs = choose_rl_envs(probe, tasks)
        todo.remove("rl")
        if envs:
            report["stages"]["rl"] = run_rl(model, tok, proc, envs, rl_time - (time.perf_counter() - t_rl), scfg.data,
                                            scfg.seed, heldout_items=rl_heldout_items(scfg),
                                            steps=scfg.steps.get("rl", 0) if fixed else 0,
                                            settings=scfg.train.get("rl"))
        else:
            report["rl_skipped"] = (f"no task's SFT score both beat its answer prior by 2 standard errors and "
                                    f"left room to learn (at most {RL_CEILING})")
    if "eval" in todo:
        report["eval"] = evaluate(model, tok, proc, tasks, scfg.eval_items, budget("eval"), scfg.data, timed=not fixed)
        todo.remove("eval")

    model_dir = out / "model"
    save_model(model, model_dir)
    tok.save_pretrained(model_dir)
    report["model_dir"] = str(model_dir)
    from opens1.report import write_report

    report["wall_seconds"] = clock.elapsed()
    report["warnings"] = _warnings(report, scfg)
    write_report(report, out)
    report["wall_seconds"] = clock.elapsed()
    tmp = out / "report.json.tmp"  # atomic: a reader never sees half a report
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "report.json")
    for w in report["warnings"]:
        log(f"warning: {w}")
    log(f"done in {report['wall_seconds']:.0f}s (budget {scfg.minutes * 60:.0f}s): {out / 'report.md'}")
    return report


FIXED_STAGES = ("pretrain", "encoder", "multimodal", "sft", "rl")


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
    from opens1.train.config import apply_overrides, get_train_preset

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
    import dataclasses

    from opens1.rl.algorithms import RLLossConfig
    from opens1.rl.trainer import RLConfig
    from opens1.train.config import _coerce

    for cls in (RLConfig, RLLossConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key in fields and key not in ("loss", "envs", "rewards", "betas"):
            return _coerce(value, fields[key].type)
    raise ValueError(f"--set rl.{key}: not a field of RLConfig or RLLossConfig")


def rl_configs(settings: dict, **base):
    """(RLConfig with `settings` applied over `base`): loss fields go to its RLLossConfig."""
    import dataclasses

    from opens1.rl.algorithms import RLLossConfig
    from opens1.rl.trainer import RLConfig

    loss_fields = {f.name for f in dataclasses.fields(RLLossConfig)}
    loss = RLLossConfig(**{k: v for k, v in settings.items() if k in loss_fields})
    return RLConfig(**{**base, **{k: v for k, v in settings.items() if k not in loss_fields}, "loss": loss})


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter() - process_age()
    p = argparse.ArgumentParser(prog="opens1 speedrun", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget from process start, report included")
    p.add_argument("--steps", default="", help="fixed work instead of a budget: 'sft=3000,rl=200' or N (SFT steps)")
    p.add_argument("--out", default="runs/speedrun")
    p.add_argument("--data", default=None, help="data root in the ../shared/data layout (default: embedded subset)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: all cores, or 1 where a start-up benchmark finds the cores busy)")
    p.add_argument("--eval-items", type=int, default=400, help="held-out items per task")
    add_list_argument(p, "--tasks", default=TASKS, help="environments to train and evaluate, comma or space separated")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run, in order: " + ",".join(STAGES))
    p.add_argument("--sft-examples", type=int, default=0, help="SFT examples per task (default: scaled with the budget)")
    add_list_argument(p, "--rl-envs", help="RL environments, comma or space separated (default: chosen after SFT)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a stage's training setting, e.g. sft.lr=1e-3 (repeatable)")
    p.add_argument("--init-from", metavar="DIR", help="start from a saved run's model (OUT/model) instead of random weights")
    p.add_argument("--build-tokenizer", metavar="DIR", help="train the tiny preset's tokenizer into DIR and exit")
    args = p.parse_args(argv)
    if args.build_tokenizer:
        train_tiny_tokenizer(args.build_tokenizer, args.data)
        return 0
    if args.minutes <= 0:
        p.error("--minutes must be positive")
    check_env_names(args.tasks)  # a typo stops here, not after pretraining
    check_env_names(args.rl_envs)
    if args.data is not None:
        check_dir(args.data, "data root")
    try:
        steps = parse_steps(args.steps)
    except ValueError as e:
        p.error(str(e))
    try:
        train = parse_sets(args.set)
    except ValueError as e:
        p.error(str(e))
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stages {bad}; choose from {STAGES}")
    scfg = SpeedrunConfig(minutes=args.minutes, out=args.out, data=args.data, preset=args.preset, seed=args.seed,
                          eval_items=args.eval_items, rl_envs=list(args.rl_envs),
                          threads=args.threads, tasks=list(args.tasks), stages=stages,
                          steps=steps, sft_examples=args.sft_examples, train=train, init_from=args.init_from)
    run(scfg, start=None if steps else start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
