"""Training-step speed of OpenS1's trainer: tokens/s and MFU for the tiny presets, single
process and 2-rank FSDP2 (gloo, CPU), against transformers' Qwen3 / Qwen3-MoE of the same
shape (the reference), plus the padding fraction with and without balanced packing.

    python bench/train_speed.py                      # tiny + tiny-dense, ~1-2 min on 2 cores
    python bench/train_speed.py --presets tiny --steps 10 --seq-len 512 --no-fsdp
    python bench/train_speed.py --device cuda --presets s1-100m --seq-len 2048 --batch 8

What is measured: full optimizer steps (forward, backward, clip, AdamW) on real packed
pretraining documents (GSM8K, SMILES, QM9, reactions, proteins, DNA from the embedded
subset, through the real tokenizer). OpenS1 runs with document masks (`doc_ids`);
the reference runs the same [B, T] batches with a plain causal mask (transformers has
no packed-document mask on CPU), so the reference does slightly less masking work.
Rates are the median over steps (after 2 warm-up steps) of per-step tokens/s.
MFU = tokens/s x FLOPs/token (6N + attention, trainer.flops_per_token) / measured peak
matmul FLOP/s. On a shared 2-core machine timings are noisy: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import torch


def _docs(tok, n_per_source: int):
    from opens1.data.sources import build_documents, load_mixture

    samples = load_mixture("gsm8k,smiles,qm9,reactions,protein,dna", None, samples_per_unit=n_per_source, seed=0)
    return build_documents(samples, "pretrain", tok)


def _model_cfg(name: str, tok):
    from opens1.config import get_preset
    from opens1.processing.processor import configure

    cfg = get_preset(name)
    cfg.text.vocab_size = max(cfg.text.vocab_size, -(-len(tok) // 64) * 64)
    return configure(tok, cfg)


def _train_cfg(args, out):
    from opens1.train.config import TrainConfig

    return TrainConfig(model="tiny", seq_len=args.seq_len, micro_batch_size=args.batch, grad_accum=1,
                       max_steps=args.steps, lr=1e-3, warmup_steps=1, out_dir=out, ckpt_every=0, progress=False,
                       tensorboard=False, spike_factor=0.0, device=args.device)


def bench_ours(args, name, tok, docs, rank=0, world=1, lora_rank=0) -> dict:
    """Steps of opens1's Trainer; tokens/s over the steps after the first two (warm-up).
    lora_rank > 0: LoRA on the decoder's attention projections, everything else frozen."""
    from opens1.data.packing import PackedStream
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.train.parallelize import apply_fsdp
    from opens1.train.trainer import Trainer, flops_per_token, measured_peak_flops

    mcfg = _model_cfg(name, tok)
    torch.manual_seed(0)
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model = S1ForConditionalGeneration(mcfg).to(dev)
    if lora_rank:
        from opens1.train.lora import apply_lora

        apply_lora(model, ["qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj"], lora_rank)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if world > 1:
        apply_fsdp(model)
    with tempfile.TemporaryDirectory() as out:
        cfg = _train_cfg(args, out)
        stream = PackedStream(docs, args.seq_len, args.batch, rank=rank, world_size=world)
        t = Trainer(model, cfg, stream, out, device=dev, resume=False)
        times, toks, seqs = [], [], []
        for _ in range(args.steps):
            m = t.train_step()
            times.append(m["seconds"])
            toks.append(m["step_tokens"])
            seqs.append(m["seq_len"])
    times, toks, seqs = times[2:], toks[2:], seqs[2:]
    # the median of per-step rates: robust to other processes stealing the CPU for a step
    tps = statistics.median(k / t for k, t in zip(toks, times))
    fpt = statistics.mean(flops_per_token(mcfg, s) for s in seqs)
    peak = measured_peak_flops(dev, None)
    return {"tok_per_s": tps, "mfu": tps * fpt / (peak * world), "step_s": statistics.median(times),
            "peak_gflops_per_rank": peak / 1e9, "trainable_params": trainable, "params": total}


def bench_reference(args, name, tok, docs) -> dict | None:
    """transformers' Qwen3ForCausalLM / Qwen3MoeForCausalLM with the same text shape, on the
    same packed batches, same AdamW; None if transformers is not installed."""
    try:
        import transformers
    except ImportError:
        return None
    from opens1.data.packing import PackedStream
    from opens1.train.losses import masked_lm_loss

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
                                             output_router_logits=True)
        model = transformers.Qwen3MoeForCausalLM(hf_cfg)
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = PackedStream(docs, args.seq_len, args.batch)
    times, toks = [], []
    for _ in range(args.steps):
        mb = next(stream).to(dev)
        t0 = time.perf_counter()
        out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask.long())
        loss = masked_lm_loss(out.logits, mb.labels)
        if getattr(out, "aux_loss", None) is not None:
            loss = loss + 0.001 * out.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        toks.append(mb.n_tokens)
    return {"tok_per_s": statistics.median(k / t for k, t in zip(toks[2:], times[2:])),
            "step_s": statistics.median(times[2:])}


def _fsdp_worker(rank, world, port, args, name, result_path):
    import torch.distributed as dist

    import opens1

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
    dist.destroy_process_group()


def bench_fsdp(args, name) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.json")
        mp.spawn(_fsdp_worker, args=(2, port, args, name, path), nprocs=2, join=True)
        with open(path) as f:
            return json.load(f)


def padding_report(args, tok, docs) -> dict:
    from opens1.data.packing import PackedStream

    return PackedStream(docs, args.seq_len, args.batch).padding_report(world_size=args.world)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="tiny,tiny-dense")
    p.add_argument("--steps", type=int, default=7, help="steps per measurement (the first 2 are warm-up)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--docs", type=int, default=60, help="samples per data source")
    p.add_argument("--world", type=int, default=2, help="ranks assumed by the padding report")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-fsdp", action="store_true", help="skip the 2-rank gloo measurement")
    p.add_argument("--fsdp-all", action="store_true", help="2-rank measurement for every preset (default: the first)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--lora-rank", type=int, default=8, help="also measure LoRA fine-tuning of the first preset (0: skip)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import opens1

    tok = opens1.load_tokenizer()
    docs = _docs(tok, args.docs)
    print(f"{len(docs)} real documents, {sum(len(d) for d in docs)} tokens; seq_len={args.seq_len} "
          f"micro_batch={args.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for name in args.presets.split(","):
        ours = bench_ours(args, name, tok, docs)
        ref = None if args.no_reference else bench_reference(args, name, tok, docs)
        line = (f"{name:11s} single  ours {ours['tok_per_s']:8.0f} tok/s  MFU {100 * ours['mfu']:5.1f}%  "
                f"(peak {ours['peak_gflops_per_rank']:.0f} GFLOP/s)")
        if ref:
            line += f" | transformers {ref['tok_per_s']:8.0f} tok/s | ours/ref {ours['tok_per_s'] / ref['tok_per_s']:.2f}x"
        print(line, flush=True)
        row = {"preset": name, "single": ours, "reference": ref}
        if not args.no_fsdp and (args.fsdp_all or name == args.presets.split(",")[0]):
            fs = bench_fsdp(args, name)
            print(f"{name:11s} fsdp-2  ours {fs['tok_per_s']:8.0f} tok/s  MFU {100 * fs['mfu']:5.1f}%  "
                  f"(2 gloo ranks; x{fs['tok_per_s'] / ours['tok_per_s']:.2f} of single)", flush=True)
            row["fsdp2"] = fs
        rows.append(row)
    if args.lora_rank:
        name = args.presets.split(",")[0]
        full, lo = rows[0]["single"], bench_ours(args, name, tok, docs, lora_rank=args.lora_rank)
        print(f"{name:11s} LoRA r={args.lora_rank}: trainable {lo['trainable_params'] / 1e3:.1f}k of "
              f"{lo['params'] / 1e6:.2f}M ({100 * lo['trainable_params'] / lo['params']:.2f}%), "
              f"{lo['tok_per_s']:.0f} tok/s vs full fine-tuning {full['tok_per_s']:.0f} tok/s "
              f"({lo['tok_per_s'] / full['tok_per_s']:.2f}x)", flush=True)
        rows[0]["lora"] = lo
    pad = padding_report(args, tok, docs)
    for k, v in pad.items():
        print(f"packing {k:20s} padding {100 * v['padding_fraction']:5.1f}%  rank imbalance "
              f"padded {v['rank_imbalance_padded']:.3f} varlen {v['rank_imbalance_varlen']:.3f}")
    for packer in ("greedy", "best_fit"):
        u, b = pad[f"{packer}/unbalanced"], pad[f"{packer}/balanced"]
        print(f"balanced vs unbalanced ({packer}): padding {100 * b['padding_fraction']:.1f}% vs "
              f"{100 * u['padding_fraction']:.1f}% -> {u['padding_fraction'] / max(b['padding_fraction'], 1e-9):.2f}x less")
    print(json.dumps({"results": rows, "padding": pad}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
