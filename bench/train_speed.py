"""Training-step speed of OpenS1's trainer: tokens/s and MFU for the tiny presets, single
process and 2-rank FSDP2 (gloo, CPU), against transformers' Qwen3 / Qwen3-MoE of the same
shape (the reference), plus the padding fraction with and without balanced packing.

    python bench/train_speed.py                      # tiny + tiny-dense, ~2-3 min on 2 cores
    python bench/train_speed.py --presets tiny --stages pretrain,sft --no-fsdp --lora-rank 0
    python bench/train_speed.py --presets tiny --stages sft --no-fsdp --lora-rank 0 --baseline-rev cca286e
    python bench/train_speed.py --device cuda --presets s1-100m --seq-len 2048 --batch 8

What is measured: full optimizer steps of `Trainer.train_step` (forward, loss, backward,
clip, AdamW), the code every training stage runs, on two kinds of real batches:
  pretrain  packed pretraining documents (GSM8K, SMILES, QM9, reactions, proteins, DNA from
            the embedded subset, through the real tokenizer): every position carries a label;
  sft       the SFT stage's chat data (the RL environments' worked answers through the
            Processor's chat template, text only): only assistant tokens carry labels,
            about a fifth of the positions.
OpenS1 runs with document masks (`doc_ids`); the reference, transformers' model with its own
`labels=` loss, runs the same [B, T] batches with a plain causal mask (transformers has no
packed-document mask on CPU), so the reference does slightly less masking work.
Contenders run their steps round-robin (so load from other processes hits all alike);
rates are the median over steps (after 2 warm-up steps) of per-step tokens/s. A step is
timed around the whole call (fetching the micro-batch included, for both), by this
process's CPU time when single-threaded (what the neighbours' load barely moves), else by
the wall clock. MFU = achieved FLOP/s / measured peak matmul FLOP/s, with the step's FLOPs
counted the same way for both: 6 x active parameters x tokens + attention, the LM head on
the labelled rows only (what a step needs; train/flops.py step_flops). A model that runs the head
on every position does that extra work unpaid.

`--baseline-rev REV` also runs this script's single-process rows on the package source of
git revision REV (`git archive REV src` into a temporary directory, in a subprocess, after
this run) and prints OpenS1's speed-up over it, both as raw tokens/s and normalised by each
run's own transformers rate (the load-robust figure). On a shared 2-core machine timings are
noisy: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

STAGES = ("pretrain", "sft")


def _docs(tok, n_per_source: int):
    from opens1.data.sources import build_documents, load_mixture

    samples = load_mixture("gsm8k,smiles,qm9,reactions,protein,dna", None, samples_per_unit=n_per_source, seed=0)
    return build_documents(samples, "pretrain", tok)


def _sft_docs(tok, mcfg, n_per_source: int):
    """The SFT stage's documents (its preset's `envs` source): chats whose labels cover the
    assistant's answer only. Text-only, so the reference can run the same batches."""
    import opens1
    from opens1.data.sources import build_documents, load_mixture

    samples = load_mixture("envs", None, samples_per_unit=n_per_source, seed=0)
    docs = build_documents(samples, "sft", tok, opens1.Processor(tok, mcfg))
    return [d for d in docs if not d.is_multimodal]


def _model_cfg(name: str, tok):
    from opens1.config import get_preset
    from opens1.processing.processor import configure

    cfg = get_preset(name)
    cfg.text.vocab_size = max(cfg.text.vocab_size, -(-len(tok) // 64) * 64)
    return configure(tok, cfg)


def _train_cfg(args, out, stage: str = "pretrain"):
    from opens1.train.config import get_train_preset

    # the stage's own preset (SFT: square-averaged per-sample weights), sized for the bench
    return get_train_preset(stage, model="tiny", seq_len=args.seq_len, micro_batch_size=args.batch, grad_accum=1,
                            grad_accum_start=0, batch_warmup_steps=0, max_steps=args.steps, lr=1e-3,
                            warmup_steps=1, out_dir=out, ckpt_every=0, progress=False, tensorboard=False,
                            spike_factor=0.0, device=args.device)


def _stream(args, docs, stage: str, rank: int = 0, world: int = 1):
    from opens1.data.packing import PackedStream

    # a conversation is never cut in two (data/stream.py does the same)
    return PackedStream(docs, args.seq_len, args.batch, rank=rank, world_size=world, chunk_long=stage == "pretrain")


def _device(args) -> torch.device:
    return torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def make_ours(args, name, tok, docs, rank=0, world=1, lora_rank=0, stage="pretrain"):
    """A step function over opens1's Trainer -> (tokens, seconds, padded seq_len), and info.
    lora_rank > 0: LoRA on the decoder's attention projections, everything else frozen."""
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.train.parallelize import apply_fsdp
    from opens1.train.trainer import Trainer

    mcfg = _model_cfg(name, tok)
    torch.manual_seed(0)
    dev = _device(args)
    model = S1ForConditionalGeneration(mcfg).to(dev)
    if lora_rank:
        from opens1.train.lora import apply_lora

        apply_lora(model, ["qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj"], lora_rank)
    info = {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params": sum(p.numel() for p in model.parameters()), "config": mcfg}
    if world > 1:
        apply_fsdp(model)
    out = tempfile.mkdtemp(prefix="train_speed_")
    trainer = Trainer(model, _train_cfg(args, out, stage), _stream(args, docs, stage, rank, world), out,
                      device=dev, resume=False)

    def step():
        m = trainer.train_step()
        return m["step_tokens"], m["loss_tokens"], m["seq_len"]

    return step, info


def make_reference(args, name, tok, docs, stage="pretrain"):
    """transformers' Qwen3ForCausalLM / Qwen3MoeForCausalLM with the same text shape, on the
    same packed batches, with its own `labels=` loss (plus the router aux loss for MoE), the
    same fused AdamW and clipping; None if transformers is not installed."""
    try:
        import transformers
    except ImportError:
        return None

    t = _model_cfg(name, tok).text
    common = dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                  num_hidden_layers=t.num_hidden_layers, num_attention_heads=t.num_attention_heads,
                  num_key_value_heads=t.num_key_value_heads, head_dim=t.head_dim, rope_theta=t.rope_theta,
                  max_position_embeddings=t.max_position_embeddings, tie_word_embeddings=False)
    if t.is_moe:
        hf_cfg = transformers.Qwen3MoeConfig(**common, num_experts=t.num_experts,
                                             num_experts_per_tok=t.num_experts_per_tok,
                                             moe_intermediate_size=t.moe_intermediate_size,
                                             mlp_only_layers=t.mlp_only_layers, decoder_sparse_step=1,
                                             output_router_logits=True, router_aux_loss_coef=t.router_aux_loss_coef)
        model = transformers.Qwen3MoeForCausalLM(hf_cfg)
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    dev = _device(args)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), fused=True)
    stream = _stream(args, docs, stage)
    # the precision OpenS1's Trainer picks on its own (dtype "auto": bf16 autocast on CUDA)
    amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()

    def step():
        mb = next(stream).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask.long(), labels=mb.labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return mb.n_tokens, mb.n_loss_tokens, mb.input_ids.shape[1]

    return step


def _clock(args, distributed: bool = False):
    # one thread: the CPU time this process used (the neighbours' load barely moves it);
    # gloo ranks wait for each other, which only the wall clock sees
    return time.process_time if args.threads == 1 and not distributed and _device(args).type == "cpu" else time.perf_counter


def step_flops(mcfg, seq_len: int, tokens: int, head_rows: int) -> float:
    """FLOPs of a training step: the body on every token, the LM head on the labelled rows
    (what train/flops.py step_flops counts; written out here so a --baseline-rev run uses the same)."""
    from opens1.train.trainer import flops_per_token

    head = 6.0 * mcfg.text.hidden_size * mcfg.text.vocab_size
    return tokens * (flops_per_token(mcfg, seq_len) - head) + head_rows * head


def interleaved(steppers: dict, steps: int, mcfg, clock=time.perf_counter) -> dict:
    """Run the contenders' steps round-robin (so load from other processes hits all of them
    alike) and return each one's median per-step tokens/s and FLOP/s after 2 warm-up steps."""
    rates = {k: [] for k in steppers}
    flops = {k: [] for k in steppers}
    seqs = {k: [] for k in steppers}
    for i in range(steps):
        for k, step in steppers.items():
            t0 = clock()
            n, head_rows, T = step()
            dt = clock() - t0
            if i >= 2:
                rates[k].append(n / dt)
                flops[k].append(step_flops(mcfg, T, n, head_rows) / dt)
                seqs[k].append(T)
    return {k: {"tok_per_s": statistics.median(v), "flop_per_s": statistics.median(flops[k]),
                "seq_len": statistics.mean(seqs[k])} for k, v in rates.items()}


_PEAK: dict = {}


def peak_flops(args) -> float:
    """Matmul FLOP/s this process can reach, timed by the same clock as the steps: with the
    CPU-time clock, the best of 5 [1024 x 1024] float32 matmuls by process time (a wall-clock
    peak on a loaded machine would be too low); else train/flops.py measured_peak_flops."""
    dev = _device(args)
    if dev.type not in _PEAK:
        if _clock(args) is time.process_time:
            a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
            a @ b
            best = float("inf")
            for _ in range(5):
                t0 = time.process_time()
                a @ b
                best = min(best, time.process_time() - t0)
            _PEAK[dev.type] = 2 * 1024**3 / best
        else:
            from opens1.train.trainer import measured_peak_flops

            _PEAK[dev.type] = measured_peak_flops(dev, torch.bfloat16 if dev.type == "cuda" else None)
    return _PEAK[dev.type]


def _mfu(r: dict, args) -> float:
    return r["flop_per_s"] / peak_flops(args)


def bench_ours(args, name, tok, docs, rank=0, world=1) -> dict:
    """opens1 alone (used for the 2-rank run)."""
    step, info = make_ours(args, name, tok, docs, rank, world)
    r = interleaved({"ours": step}, args.steps, info["config"], _clock(args, distributed=world > 1))["ours"]
    # this rank's rate over this rank's peak: the job's MFU when the ranks are symmetric
    r["mfu"] = r["flop_per_s"] / peak_flops(args) if world == 1 else _wall_mfu(r, args)
    return r


def _wall_mfu(r: dict, args) -> float:
    from opens1.train.trainer import measured_peak_flops

    return r["flop_per_s"] / measured_peak_flops(_device(args))


def _fsdp_worker(rank, world, port, args, name, result_path):
    import torch.distributed as dist

    import opens1
    from opens1.train.distributed import shutdown_distributed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tok = opens1.load_tokenizer()
    r = bench_ours(args, name, tok, _docs(tok, args.docs), rank, world)
    # tokens/s of the whole job: every rank processed its own micro-batch per step
    tps = torch.tensor([r["tok_per_s"]])
    dist.all_reduce(tps)
    if rank == 0:
        r["tok_per_s"] = float(tps)
        with open(result_path, "w") as f:
            json.dump(r, f)
    shutdown_distributed()  # bench_ours returned: its FSDP model is gone before the group


def bench_fsdp(args, name) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.json")
        mp.spawn(_fsdp_worker, args=(2, port, args, name, path), nprocs=2, join=True)
        # note: the 2 ranks share this machine's cores, so on a 2-core CPU each rank gets one
        with open(path) as f:
            return json.load(f)


def padding_report(args, tok, docs) -> dict:
    from opens1.data.packing import PackedStream

    return PackedStream(docs, args.seq_len, args.batch).padding_report(world_size=args.world)


def run_baseline(args, rev: str) -> dict:
    """This script's single-process rows on the package source of git revision `rev`, in a
    subprocess -> {(preset, stage): {"ours": ..., "reference": ...}}."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="train_speed_base_") as d:
        tar = subprocess.run(["git", "-C", repo, "archive", rev, "src"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", d], input=tar, check=True)
        out = os.path.join(d, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--presets", args.presets, "--stages", args.stages,
               "--steps", str(args.steps), "--seq-len", str(args.seq_len), "--batch", str(args.batch),
               "--docs", str(args.docs), "--sft-docs", str(args.sft_docs), "--device", args.device,
               "--threads", str(args.threads), "--no-fsdp", "--lora-rank", "0", "--json-out", out]
        env = {**os.environ, "PYTHONPATH": os.path.join(d, "src")}
        print(f"baseline: the same rows on `git archive {rev} src` (a subprocess, after this run) ...", flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(out) as f:
            rows = json.load(f)["results"]
    return {(r["preset"], r["stage"]): r for r in rows}


def print_baseline(rows: list, base: dict, rev: str) -> None:
    for r in rows:
        b = base.get((r["preset"], r["stage"]))
        if b is None:
            continue
        now, then = r["single"]["tok_per_s"], b["single"]["tok_per_s"]
        line = (f"{r['preset']:11s} {r['stage']:8s} vs {rev}: ours {now:8.0f} tok/s, then {then:8.0f} tok/s "
                f"-> {now / then:.2f}x")
        if r.get("reference") and b.get("reference"):
            ratio_now = now / r["reference"]["tok_per_s"]
            ratio_then = then / b["reference"]["tok_per_s"]
            line += (f"; per transformers in the same run: {ratio_now:.2f}x now, {ratio_then:.2f}x then "
                     f"-> {ratio_now / ratio_then:.2f}x")
        print(line, flush=True)


def bench_stage(args, name, stage, tok, docs, dev, lora: bool) -> dict:
    steppers = {}
    steppers["ours"], info = make_ours(args, name, tok, docs, stage=stage)
    ref = None if args.no_reference else make_reference(args, name, tok, docs, stage)
    if ref is not None:
        steppers["transformers"] = ref
    if lora:
        steppers["lora"], lora_info = make_ours(args, name, tok, docs, lora_rank=args.lora_rank, stage=stage)
    r = interleaved(steppers, args.steps, info["config"], _clock(args))
    ours = r["ours"]
    ours["mfu"] = _mfu(ours, args)
    line = (f"{name:11s} {stage:8s} single  ours {ours['tok_per_s']:7.0f} tok/s {ours['flop_per_s'] / 1e9:6.1f} GFLOP/s "
            f"MFU {100 * ours['mfu']:5.1f}%")
    if "transformers" in r:
        ref_r = r["transformers"]
        ref_r["mfu"] = _mfu(ref_r, args)
        line += (f" | transformers {ref_r['tok_per_s']:7.0f} tok/s {ref_r['flop_per_s'] / 1e9:6.1f} GFLOP/s "
                 f"MFU {100 * ref_r['mfu']:5.1f}% | ours/ref {ours['tok_per_s'] / ref_r['tok_per_s']:.2f}x")
    print(line, flush=True)
    row = {"preset": name, "stage": stage, "single": ours, "reference": r.get("transformers")}
    if "lora" in r:
        lo = r["lora"]
        lo["mfu"] = _mfu(lo, args)
        print(f"{name:11s} LoRA r={args.lora_rank}: trainable {lora_info['trainable_params'] / 1e3:.1f}k of "
              f"{lora_info['params'] / 1e6:.2f}M ({100 * lora_info['trainable_params'] / lora_info['params']:.2f}%), "
              f"{lo['tok_per_s']:.0f} tok/s vs full fine-tuning {ours['tok_per_s']:.0f} tok/s "
              f"({lo['tok_per_s'] / ours['tok_per_s']:.2f}x)", flush=True)
        row["lora"] = {**lo, "trainable_params": lora_info["trainable_params"], "params": lora_info["params"]}
    return row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny,tiny-dense")
    p.add_argument("--stages", default="pretrain,sft", help="comma list of: " + ", ".join(STAGES))
    p.add_argument("--steps", type=int, default=20,
                   help="steps per measurement (the first 2 are warm-up; batches vary in length, so a "
                        "median over 5 steps moved the pretraining ratio by 0.1 between runs)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--docs", type=int, default=60, help="pretraining samples per data source")
    p.add_argument("--sft-docs", type=int, default=200, help="SFT chats read (envs source)")
    p.add_argument("--world", type=int, default=2, help="ranks assumed by the padding report")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable with the 1-thread gloo ranks)")
    p.add_argument("--no-fsdp", action="store_true", help="skip the 2-rank gloo measurement")
    p.add_argument("--fsdp-all", action="store_true", help="2-rank measurement for every preset (default: the first)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--lora-rank", type=int, default=8, help="also measure LoRA fine-tuning of the first preset (0: skip)")
    p.add_argument("--baseline-rev", default=None, help="also run the single-process rows on this git revision's src")
    p.add_argument("--json-out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    bad = set(args.stages.split(",")) - set(STAGES)
    if bad:
        p.error(f"unknown stage(s) {sorted(bad)}; choose from {STAGES}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    import opens1

    tok = opens1.load_tokenizer()
    stages = args.stages.split(",")
    docs = {"pretrain": _docs(tok, args.docs)}
    if "sft" in stages:
        docs["sft"] = _sft_docs(tok, _model_cfg(args.presets.split(",")[0], tok), args.sft_docs)
    for stage in stages:
        d = docs[stage]
        n, lab = sum(len(x) for x in d), sum(int((x.labels[1:] != -100).sum()) for x in d)
        print(f"{stage}: {len(d)} real documents, {n} tokens, {100 * lab / n:.0f}% of positions labelled", flush=True)
    clock = "process CPU time" if _clock(args) is time.process_time else "wall clock"
    print(f"seq_len={args.seq_len} micro_batch={args.batch}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, timed by {clock}; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    dev = _device(args)
    print(f"measured peak matmul: {peak_flops(args) / 1e9:.0f} GFLOP/s (same clock as the steps)", flush=True)
    for i, name in enumerate(args.presets.split(",")):
        for j, stage in enumerate(stages):
            row = bench_stage(args, name, stage, tok, docs[stage], dev, lora=i == 0 and j == 0 and args.lora_rank > 0)
            if not args.no_fsdp and (args.fsdp_all or i == 0) and stage == "pretrain":
                fs = bench_fsdp(args, name)
                print(f"{name:11s} pretrain fsdp-2  ours {fs['tok_per_s']:8.0f} tok/s  MFU {100 * fs['mfu']:5.1f}%  "
                      f"(2 gloo ranks, wall clock; x{fs['tok_per_s'] / row['single']['tok_per_s']:.2f} of single)", flush=True)
                row["fsdp2"] = fs
            rows.append(row)
    pad = padding_report(args, tok, docs["pretrain"])
    if args.json_out is None:
        for k, v in pad.items():
            print(f"packing {k:20s} padding {100 * v['padding_fraction']:5.1f}%  rank imbalance "
                  f"padded {v['rank_imbalance_padded']:.3f} varlen {v['rank_imbalance_varlen']:.3f}  "
                  f"efficiency padded {100 * v['efficiency_padded']:.1f}% varlen {100 * v['efficiency_varlen']:.1f}%")
        for packer in ("greedy", "best_fit"):
            u, b = pad[f"{packer}/unbalanced"], pad[f"{packer}/balanced"]
            print(f"balanced vs unbalanced ({packer}): padding {100 * b['padding_fraction']:.1f}% vs "
                  f"{100 * u['padding_fraction']:.1f}% -> {u['padding_fraction'] / max(b['padding_fraction'], 1e-9):.2f}x less")
    result = {"results": rows, "padding": pad, "load_average": os.getloadavg()[0]}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, default=float)
    if args.baseline_rev:
        print_baseline(rows, run_baseline(args, args.baseline_rev), args.baseline_rev)
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
