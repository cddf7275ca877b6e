"""Model speed: OpenS1's Qwen3-MoE decoder vs transformers' Qwen3MoeForCausalLM with the
same weights, in one run.

Measures, on the same config (default: the `tiny` preset's text model):
  - training step tokens/s (forward + loss incl. the MoE aux loss + backward + fused AdamW
    step), in float32 and under bf16 autocast (float32 weights, bf16 matmuls) for both. Ours
    is the code the Trainer runs (train/trainer.py): the model's hidden states, then the
    fused head + cross-entropy of train/losses.py, plus router_aux_loss_coef x the aux loss;
    transformers' is its own `labels=` loss (which adds the aux loss the same way)
  - batch-1 generation tokens/s (greedy, KV cache, prefill + decode steps), eager, and with
    compiled decode steps (`generate(compile=True)`; transformers: static cache + its
    CompileConfig), each pair timed alternately; the first call of each compiled variant
    (compile + one generation) is timed on its own and printed, against a fresh inductor
    cache (so both compile from scratch; `--warm-cache` keeps the user's cache)
  - the ratio OpenS1 / transformers for each, and achieved FLOP/s as a fraction of the
    machine's matmul peak, measured in the same run with a large float32 (and bf16) matmul.

Usage:
    python bench/model_speed.py                       # ~2 minutes on 2 CPU cores (compiles included)
    python bench/model_speed.py --preset s1-100m --batch 8 --seq 512 --steps 10
    python bench/model_speed.py --threads 2 --new-tokens 128   # wall clock

Timings on a shared machine are noisy: the two models are measured alternately
(ours, theirs, ours, ...) and the median is reported, so drift hits both equally.
With one thread (the default) the clock is this process's CPU time, which the
neighbours' load barely moves; with more threads it is the wall clock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch


def matmul_peak(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a large matmul in `dtype`: what this machine can do at best."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = CLOCK()
        a @ b
        best = min(best, CLOCK() - t)
    return 2 * n**3 / best


def build(preset: str, seed: int = 0):
    import transformers

    from opens1.config import get_preset
    from opens1.models.checkpoint import convert_state_dict, text_config_to_hf
    from opens1.models.s1 import S1ForConditionalGeneration

    cfg = get_preset(preset).replace(vision=None, timeseries=None)
    if not cfg.text.is_moe:
        raise SystemExit(f"preset {preset!r} is dense; this benchmark compares MoE models")
    torch.manual_seed(seed)
    d = text_config_to_hf(cfg.text)
    d.pop("architectures"), d.pop("model_type")
    d["output_router_logits"] = True  # transformers then adds router_aux_loss_coef x the aux loss, as our Trainer does
    ref = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**d))
    ours = S1ForConditionalGeneration(cfg)
    # the checkpoint adapter maps transformers' names (separate q/k/v, gate/up) onto ours
    ours.load_state_dict(convert_state_dict(ref.state_dict(), cfg), strict=True)
    return cfg, ours, ref


def flops_per_token(cfg, ctx: float) -> float:
    """Forward matmul FLOPs per token: 2 x active non-embedding parameters plus attention
    scores and values (2 x 2 x ctx x heads x head_dim per layer)."""
    t = cfg.text
    attn = t.hidden_size * t.head_dim * (2 * t.num_attention_heads + 2 * t.num_key_value_heads)
    dense_mlp = 3 * t.hidden_size * t.intermediate_size
    moe_mlp = 3 * t.hidden_size * t.moe_intermediate_size * t.num_experts_per_tok + t.hidden_size * t.num_experts
    mlp = sum(moe_mlp if t.is_moe_layer(i) else dense_mlp for i in range(t.num_hidden_layers))
    params = t.num_hidden_layers * attn + mlp + t.hidden_size * t.vocab_size  # + lm_head
    return 2 * params + t.num_hidden_layers * 4 * ctx * t.num_attention_heads * t.head_dim


def ours_loss(model, ids):
    """The Trainer's loss (train/trainer.py): hidden states, the fused head + cross-entropy on
    the labelled rows (here every position but the last), plus the coefficient x aux loss."""
    from opens1.train.losses import head_weight, lm_loss

    out = model(ids, return_hidden=True, output_router_logits=True)
    loss = lm_loss(out.hidden_states, head_weight(model), ids)
    return loss + model.config.text.router_aux_loss_coef * out.aux_loss.float()


def train_step_fn(model, ids, ours: bool, amp: torch.dtype | None = None):
    # the same optimizer for both: torch's fused AdamW, what OpenS1's trainer builds (train.optim.adamw)
    # and transformers' Trainer defaults to ("adamw_torch_fused")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = ours_loss(model, ids) if ours else model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def decode_fn(model, prompt, new_tokens: int, ours: bool, compiled: bool = False):
    model.eval()
    if ours:
        return lambda: model.generate(prompt, max_new_tokens=new_tokens, compile=compiled)
    kw = {}
    if compiled:
        # transformers' own compiled decoding: a static cache and torch.compile of the forward,
        # which generate() only does on CPU when the compile config says so
        from transformers import CompileConfig

        cc = CompileConfig(fullgraph=False, mode="default")
        cc._compile_all_devices = True
        kw = dict(cache_implementation="static", compile_config=cc)

    def hf():
        with torch.inference_mode():
            return model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=0, **kw)

    return hf


CLOCK = time.perf_counter  # set in main(): CPU time of this process when single-threaded


def alternate(fa, fb, warmup: int, reps: int) -> tuple[float, float]:
    for _ in range(warmup):
        fa(), fb()
    ta, tb = [], []
    for _ in range(reps):
        t = CLOCK()
        fa()
        ta.append(CLOCK() - t)
        t = CLOCK()
        fb()
        tb.append(CLOCK() - t)
    return statistics.median(ta), statistics.median(tb)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--decode-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled-decode rows (each compiles ~20 s)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast training row")
    ap.add_argument("--wall", action="store_true", help="time with the wall clock even when single-threaded")
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the user's inductor cache (default: a fresh one, so compile times are cold)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="model_speed_inductor_")
    torch.set_num_threads(args.threads)
    global CLOCK
    # On a shared machine the wall clock mostly measures the neighbours. With one thread,
    # the CPU time this process consumed is the honest cost, so use it.
    CLOCK = time.process_time if args.threads == 1 and not args.wall else time.perf_counter

    from opens1.models.checkpoint import convert_state_dict

    peak, peak_bf16 = matmul_peak(), matmul_peak(dtype=torch.bfloat16)
    cfg, ours, ref = build(args.preset)
    V = cfg.text.vocab_size
    clock = "process CPU time" if CLOCK is time.process_time else "wall clock"
    print(f"preset {args.preset}: {sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M parameters, "
          f"{args.threads} thread(s), float32, timed by {clock}; matmul peak {peak / 1e9:.1f} GFLOP/s "
          f"(bf16 {peak_bf16 / 1e9:.1f}); load average {os.getloadavg()[0]:.2f}")

    # identical start: both models learn from the same weights (two AdamW copies)
    ids = torch.randint(0, V, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        l1, l2 = float(ours_loss(ours, ids)), float(ref(input_ids=ids, labels=ids).loss)
    print(f"same initial loss (incl. aux): ours {l1:.5f}  transformers {l2:.5f}")
    start = {k: v.clone() for k, v in ref.state_dict().items()}  # decoding starts from these again
    t_ours, t_ref = alternate(train_step_fn(ours, ids, True), train_step_fn(ref, ids, False), 1, args.steps)
    ntok = args.batch * args.seq
    fl_train = 3 * flops_per_token(cfg, args.seq / 2) * ntok  # backward ~ 2x forward
    rows = [("train step", ntok / t_ours, ntok / t_ref, fl_train / t_ours, fl_train / t_ref, peak)]
    if not args.no_bf16:
        # both under bf16 autocast (float32 weights and optimizer), against the bf16 matmul peak;
        # the models continue from the float32 row's weights (same data, same number of steps)
        t_ours, t_ref = alternate(train_step_fn(ours, ids, True, torch.bfloat16),
                                  train_step_fn(ref, ids, False, torch.bfloat16), 1, args.steps)
        rows.append(("train bf16 amp", ntok / t_ours, ntok / t_ref, fl_train / t_ours, fl_train / t_ref,
                     peak_bf16))

    # training moved the two copies apart (float32 and bf16 rounding differ between the
    # implementations): decode from the identical initial weights so greedy tokens can match
    ref.load_state_dict(start)
    ours.load_state_dict(convert_state_dict(start, cfg), strict=True)
    prompt = torch.randint(0, V, (1, args.prompt_len), generator=torch.Generator().manual_seed(2))
    ctx = args.prompt_len + args.new_tokens / 2
    fl_dec = flops_per_token(cfg, ctx) * (args.new_tokens + args.prompt_len)
    n = args.new_tokens
    g = {(o, c): decode_fn(ours if o else ref, prompt, n, o, c) for o in (True, False) for c in (False, True)}
    outs, first = {}, {}
    for key in [(True, False), (False, False)] + ([] if args.no_compile else [(True, True), (False, True)]):
        t = time.perf_counter()
        outs[key] = g[key]()  # the first call of a compiled variant compiles
        first[key] = time.perf_counter() - t
    if not args.no_compile:
        # wall clock: inductor compiles its C++ kernels in worker processes
        a, b = first[(True, True)], first[(False, True)]
        print(f"compiled decode, first call (compile + one generation, wall clock): OpenS1 {a:.1f} s, "
              f"transformers {b:.1f} s -> {a / b:.2f}x; load average {os.getloadavg()[0]:.2f}")
    same = all(torch.equal(o, outs[(False, False)]) for o in outs.values())
    # rows: both eager; ours compiled vs transformers eager (its default generate); both compiled
    pairs = [("decode b=1", (True, False), (False, False))]
    if not args.no_compile:
        pairs += [("decode compiled", (True, True), (False, False)), ("both compiled", (True, True), (False, True))]
    for name, a, b in pairs:
        t_ours, t_ref = alternate(g[a], g[b], 1, args.decode_reps)
        rows.append((name, n / t_ours, n / t_ref, fl_dec / t_ours, fl_dec / t_ref, peak))

    print(f"greedy tokens identical to transformers (every variant): {same}")
    print("rows: train step; decode b=1 (both eager); decode compiled (OpenS1 compile=True vs transformers'\n"
          "default eager generate: the issue's reference); both compiled (vs transformers' static cache + compile)")
    print(f"{'':16s} {'OpenS1 tok/s':>13s} {'HF tok/s':>10s} {'ratio':>7s} {'OpenS1 FLOP/s':>14s} {'HF FLOP/s':>10s}")
    for name, a, b, fa, fb, pk in rows:  # FLOP/s as a share of the peak in the row's precision
        print(f"{name:16s} {a:13.1f} {b:10.1f} {a / b:6.2f}x {fa / 1e9:8.2f}G {100 * fa / pk:4.1f}% "
              f"{fb / 1e9:6.2f}G {100 * fb / pk:4.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
