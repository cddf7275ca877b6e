"""One prepared GPU check: what a short loan of a CUDA device should measure, in one run.

    python bench/gpu_check.py                      # on a CUDA device: every check, ~5-8 min on one H100/H200
    python bench/gpu_check.py --checks train,decode
    python bench/gpu_check.py --cpu                # here, without a GPU: the same code paths at tiny sizes

Checks (each OpenS1 against transformers on the same device, in the same process, printing
the ratio; a failing check is reported and the others still run):
  train   the Trainer's own step (`Trainer.train_step`: bf16 autocast, the fused head + loss on
          labelled rows, fused AdamW) against transformers' Qwen3-MoE with its `labels=` loss
          under the same autocast, on real pretraining and SFT batches (bench/train_speed.py);
          tokens/s and MFU against the measured bf16 matmul peak
  decode  greedy generation, batch 1: OpenS1 eager and compiled (`generate(compile=True)`)
          against transformers' default generate and its static-cache compiled generate;
          identical greedy tokens, first-call (compile) times
  fsdp    FSDP2 on one GPU (a 1-rank process group, train/parallelize.py's apply_fsdp with bf16
          parameters): the same Trainer steps with and without it, same first-step loss
  layer   one decoder MoE layer of a real-size preset (default intern-s1: hidden 4096, 128
          experts, top-8) in bf16, forward + backward, against transformers' layer with the
          same weights: output agreement and time
Default sizes on CUDA: preset s1-100m (train, decode, fsdp), seq 2048 x batch 8; with --cpu:
tiny, seq 256 x batch 2, and the layer check on the tiny preset (a real-size layer needs
~20 GB). Exit status 0 when every check ran, 1 when one failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

CHECKS = ("train", "decode", "fsdp", "layer")
BENCH = Path(__file__).resolve().parent


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"opens1_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checks", default=",".join(CHECKS), help="comma list of: " + ", ".join(CHECKS))
    p.add_argument("--cpu", action="store_true", help="no GPU: run every check on the CPU at tiny sizes")
    p.add_argument("--preset", default=None, help="model preset for train/decode/fsdp (default s1-100m; --cpu: tiny)")
    p.add_argument("--layer-preset", default=None, help="preset whose MoE layer is checked (default intern-s1; --cpu: tiny)")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (+2 warm-up)")
    p.add_argument("--new-tokens", type=int, default=None)
    args = p.parse_args(argv)
    bad = set(args.checks.split(",")) - set(CHECKS)
    if bad:
        p.error(f"unknown check(s) {sorted(bad)}; choose from {CHECKS}")
    tiny = args.cpu
    args.device = "cpu" if args.cpu else "cuda"
    args.preset = args.preset or ("tiny" if tiny else "s1-100m")
    args.layer_preset = args.layer_preset or ("tiny" if tiny else "intern-s1")
    args.seq_len = args.seq_len or (256 if tiny else 2048)
    args.batch = args.batch or (2 if tiny else 8)
    args.steps = args.steps or (3 if tiny else 8)
    args.new_tokens = args.new_tokens or (16 if tiny else 128)
    return args


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------- train


def check_train(args) -> list[str]:
    ts = _bench_module("train_speed")
    import opens1

    targs = ts.parse_args(["--presets", args.preset, "--steps", str(args.steps + 2), "--seq-len", str(args.seq_len),
                           "--batch", str(args.batch), "--device", args.device, "--no-fsdp", "--lora-rank", "0"])
    tok = opens1.load_tokenizer()
    dev = torch.device(args.device)
    docs = {"pretrain": ts._docs(tok, 60), "sft": ts._sft_docs(tok, ts._model_cfg(args.preset, tok), 200)}
    lines = []
    for stage in ("pretrain", "sft"):
        row = ts.bench_stage(targs, args.preset, stage, tok, docs[stage], dev, lora=False)
        ref = row["reference"]
        lines.append(f"train {stage}: OpenS1 {row['single']['tok_per_s']:.0f} tok/s (MFU {100 * row['single']['mfu']:.1f}%)"
                     f" vs transformers {ref['tok_per_s']:.0f} tok/s -> {row['single']['tok_per_s'] / ref['tok_per_s']:.2f}x")
    return lines


# ---------------------------------------------------------------- decode


def check_decode(args) -> list[str]:
    ms = _bench_module("model_speed")
    dev = torch.device(args.device)
    cfg, ours, ref = ms.build(args.preset)
    ours, ref = ours.to(dev).eval(), ref.to(dev).eval()
    prompt = torch.randint(0, cfg.text.vocab_size, (1, 32), generator=torch.Generator().manual_seed(2)).to(dev)
    n = args.new_tokens
    ms.CLOCK = time.perf_counter
    g = {(o, c): ms.decode_fn(ours if o else ref, prompt, n, o, c) for o in (True, False) for c in (False, True)}
    outs, first = {}, {}
    for key in g:
        t = time.perf_counter()
        outs[key] = g[key]()
        _sync(dev)
        first[key] = time.perf_counter() - t
    same = all(torch.equal(o.cpu(), outs[(False, False)].cpu()) for o in outs.values())

    def timed(f):
        def run():
            f()
            _sync(dev)
        return run

    lines = [f"decode: greedy tokens identical to transformers (eager and compiled, both): {same}",
             f"decode: first compiled call (compile + {n} tokens): OpenS1 {first[(True, True)]:.1f} s, "
             f"transformers {first[(False, True)]:.1f} s -> {first[(True, True)] / first[(False, True)]:.2f}x"]
    for name, a, b in (("eager vs eager", (True, False), (False, False)),
                       ("compiled vs transformers default", (True, True), (False, False)),
                       ("compiled vs compiled", (True, True), (False, True))):
        t_ours, t_ref = ms.alternate(timed(g[a]), timed(g[b]), 1, 3)
        lines.append(f"decode {name}: OpenS1 {n / t_ours:.0f} tok/s vs transformers {n / t_ref:.0f} tok/s "
                     f"-> {t_ref / t_ours:.2f}x")
    return lines


# ---------------------------------------------------------------- fsdp


@contextlib.contextmanager
def _one_rank_group(dev: torch.device):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=0, world_size=1)
    try:
        yield
    finally:
        from opens1.train.distributed import shutdown_distributed

        shutdown_distributed()


def check_fsdp(args) -> list[str]:
    ts = _bench_module("train_speed")
    import opens1
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.train.parallelize import apply_fsdp
    from opens1.train.trainer import Trainer

    dev = torch.device(args.device)
    tok = opens1.load_tokenizer()
    docs = ts._docs(tok, 60)
    targs = ts.parse_args(["--seq-len", str(args.seq_len), "--batch", str(args.batch), "--device", args.device])
    mcfg = ts._model_cfg(args.preset, tok)
    param_dtype = torch.bfloat16 if dev.type == "cuda" else None
    with _one_rank_group(dev):
        steppers, first_loss = {}, {}
        for name in ("plain", "fsdp"):
            torch.manual_seed(0)
            model = S1ForConditionalGeneration(mcfg).to(dev)
            if name == "fsdp":
                apply_fsdp(model, param_dtype=param_dtype)
            out = tempfile.mkdtemp(prefix="gpu_check_fsdp_")
            trainer = Trainer(model, ts._train_cfg(targs, out), ts._stream(targs, docs, "pretrain"), out,
                              device=dev, resume=False)

            def step(trainer=trainer, name=name):
                m = trainer.train_step()
                first_loss.setdefault(name, m["loss"])
                return m["step_tokens"], m["loss_tokens"], m["seq_len"]

            steppers[name] = step
        # round-robin, so load from elsewhere hits both alike
        r = ts.interleaved(steppers, args.steps + 2, mcfg, time.perf_counter)
        del steppers, step, trainer, model  # the FSDP model must be gone before the process group
    r0, r1 = r["plain"]["tok_per_s"], r["fsdp"]["tok_per_s"]
    return [f"fsdp: 1-rank FSDP2 {r1:.0f} tok/s vs plain {r0:.0f} tok/s -> {r1 / r0:.2f}x; first-step loss "
            f"{first_loss['fsdp']:.4f} vs {first_loss['plain']:.4f}"
            + (" (FSDP with bf16 parameters)" if param_dtype is not None else "")]


# ---------------------------------------------------------------- layer


def _one_layer_pair(preset: str, dev: torch.device, dtype: torch.dtype):
    """A one-decoder-layer model of `preset`'s text shape (MoE layer, small vocabulary) for
    OpenS1 and transformers, with the same weights, on `dev` in `dtype`."""
    import transformers

    from opens1.config import get_preset
    from opens1.models.checkpoint import convert_state_dict, text_config_to_hf
    from opens1.models.s1 import S1ForConditionalGeneration

    cfg = get_preset(preset).replace(vision=None, timeseries=None)
    cfg.text = dataclasses.replace(cfg.text, num_hidden_layers=1, vocab_size=1024, mlp_only_layers=[])
    d = text_config_to_hf(cfg.text)
    d.pop("architectures"), d.pop("model_type")
    torch.manual_seed(0)
    with torch.device(dev):
        ref = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**d)).to(dtype)
        ours = S1ForConditionalGeneration(cfg).to(dtype)
    ours.load_state_dict(convert_state_dict(ref.state_dict(), cfg), strict=True)
    return cfg, ours.train(), ref.train()


def check_layer(args) -> list[str]:
    dev = torch.device(args.device)
    cfg, ours, ref = _one_layer_pair(args.layer_preset, dev, torch.bfloat16)
    T = min(args.seq_len, 2048)
    ids = torch.randint(0, cfg.text.vocab_size, (1, T), generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.no_grad():
        a = ours(ids).logits.float()
        b = ref(input_ids=ids).logits.float()
    rel = float((a - b).norm() / b.norm())

    def step(model, is_ours):
        def run():
            h = model(ids, return_hidden=True).hidden_states if is_ours else model.model(input_ids=ids).last_hidden_state
            h.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
            _sync(dev)
        return run

    ms = _bench_module("model_speed")
    ms.CLOCK = time.perf_counter
    t_ours, t_ref = ms.alternate(step(ours, True), step(ref, False), 1, args.steps)
    E, k = cfg.text.num_experts, cfg.text.num_experts_per_tok
    return [f"layer {args.layer_preset} (hidden {cfg.text.hidden_size}, {E} experts, top-{k}, {T} tokens, bf16): "
            f"logits rel. difference {rel:.2e}; forward+backward OpenS1 {1e3 * t_ours:.1f} ms vs transformers "
            f"{1e3 * t_ref:.1f} ms -> {t_ref / t_ours:.2f}x"]


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing measured (pass --cpu for a CPU run of the same checks at tiny sizes)")
        return 0
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"gpu_check on {name}; torch {torch.__version__}; checks {args.checks}; preset {args.preset}, "
          f"layer {args.layer_preset}, seq {args.seq_len} x batch {args.batch}", flush=True)
    if dev.type == "cuda":
        from opens1.train.trainer import measured_peak_flops

        print(f"measured matmul peak: bf16 {measured_peak_flops(dev, torch.bfloat16) / 1e12:.0f} TFLOP/s, "
              f"fp32 {measured_peak_flops(dev) / 1e12:.0f} TFLOP/s", flush=True)
    checks = {"train": check_train, "decode": check_decode, "fsdp": check_fsdp, "layer": check_layer}
    failed = []
    for c in args.checks.split(","):
        t0 = time.perf_counter()
        try:
            for line in checks[c](args):
                print(line, flush=True)
            print(f"[{c}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception:  # one broken check must not hide the others' numbers
            failed.append(c)
            traceback.print_exc()
            print(f"[{c}] FAILED after {time.perf_counter() - t0:.0f} s", flush=True)
    print("gpu_check: " + (f"failed: {', '.join(failed)}" if failed else "every check ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
