"""Entropy-control ablation for OpenS1's RL stage: OREAL with KL-Cov vs without, on a tiny
model fine-tuned on real short-answer tasks, from the same SFT weights and the same seeds.

    python bench/rl_entropy.py                               # ~12 min on 2 busy cores (SFT ~4.5 min, cached)
    python bench/rl_entropy.py --steps 20 --heldout-items 150  # quicker, noisier
    python bench/rl_entropy.py --arms kl_cov,none,clip_cov --seeds 0,1 --steps 200 --heldout-items 600

What runs
    1. SFT: the `tiny` preset (4-layer MoE, random init) trained with the speedrun's own SFT stage
       (`opens1.speedrun.run_train_stage("sft", ...)`) on the RL environments' worked answers.
       The checkpoint is cached under --cache (keyed by its settings), so reruns skip it.
    2. RL: for every arm (entropy_control = kl_cov / none / clip_cov) and seed, a fresh copy of
       the SFT weights trained by `RLTrainer` for --steps steps. Arms share the seed, so their
       first step sees the same prompts and the same sampling noise; they diverge only through
       their updates.
    3. Measured per arm: the trainer's rollout-token entropy and sampled reward at every step,
       a *probe entropy* every --probe-every steps (the policy's mean token entropy on a fixed
       set of SFT-model responses to fixed prompts, so the contexts never change and only the
       policy does), and the greedy held-out reward before and after RL.
The reference point is the `none` arm: the table prints each arm's final entropy and held-out
reward next to it, with the ratio/difference and the standard error of a difference of two
proportions sqrt((a(1-a) + b(1-b)) / n). JSON results go to --out.

Timings on the shared 2-core machine are noisy; the numbers that matter are entropies and rewards.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

DEFAULT_ENVS = "chem/ring_count,chem/aromatic_rings,chem/atom_count"


def log(msg: str) -> None:
    print(f"[rl_entropy] {msg}", file=sys.stderr, flush=True)


def se_diff(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two proportions measured on n items each."""
    return math.sqrt(max(0.0, a * (1 - a) + b * (1 - b)) / max(1, n))


# ---------------------------------------------------------------- SFT (cached)


def sft_model(args, tok):
    """The SFT policy: loaded from the cache when its settings match, else trained and cached."""
    from safetensors.torch import load_file, save_file

    from opens1.speedrun import SpeedrunConfig, build_model, run_train_stage, sft_samples

    model, proc = build_model("tiny", tok, args.sft_seed)
    key = json.dumps({"envs": args.sft_envs, "seconds": args.sft_seconds, "seed": args.sft_seed,
                      "per_env": args.sft_per_env, "vocab": len(tok), "v": 1}, sort_keys=True)
    path = Path(args.cache) / f"sft-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        log(f"SFT weights from cache {path}")
        return model, proc, {"cached": str(path)}
    samples, live = sft_samples(None, per_env=args.sft_per_env, tasks=args.sft_envs.split(","))
    scfg = SpeedrunConfig(minutes=args.sft_seconds / 60, seed=args.sft_seed, seq_len=256, micro_batch_size=8)
    entry = run_train_stage("sft", model, tok, proc, scfg, seconds=args.sft_seconds, out=Path(args.cache) / "work",
                            samples=samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache entry
    return model, proc, {"steps": entry["steps"], "loss_first": entry["loss"][0], "loss_last": entry["loss"][-1],
                         "seconds": entry["seconds"], "envs": live}


# ---------------------------------------------------------------- probe entropy


class EntropyProbe:
    """Mean token entropy of a policy on FIXED (prompt, response) sequences: responses sampled
    once from the SFT model. Entropy on the arm's own rollouts mixes two effects (the policy
    and the contexts it now visits); on fixed contexts only the policy changes."""

    def __init__(self, trainer, n_prompts: int, seed: int):
        from opens1.infer.sampling import SamplingParams

        rng_state = trainer.rng.getstate()
        trainer.rng.seed(10_000 + seed)  # probe prompts: a stream of their own
        cases = trainer._draw_cases(n_prompts)
        trainer.rng.setstate(rng_state)
        s = SamplingParams(max_new_tokens=trainer.cfg.max_new_tokens, temperature=1.0,
                           stop_token_ids=(trainer.tok.eos_token_id,), vocab_limit=len(trainer.tok))
        groups = trainer.engine.generate([trainer._prompt_inputs(c) for _, c in cases], 2, s, seed=seed)
        self.rollouts = [r for g in groups for r in g if r.response_ids]

    @torch.no_grad()
    def __call__(self, trainer) -> float:
        was = trainer.model.training
        trainer.model.eval()
        _, ent, mask = trainer._logprobs(self.rollouts)  # [B, T-1] each
        trainer.model.train(was)
        return float((ent * mask).sum() / mask.sum().clamp_min(1))


# ---------------------------------------------------------------- one arm


def run_arm(args, tok, proc, sft_state, arm: str, seed: int, before: dict | None) -> dict:
    from opens1.rl.algorithms import RLLossConfig
    from opens1.rl.trainer import RLConfig, RLTrainer
    from opens1.speedrun import build_model

    model, _ = build_model("tiny", tok, seed)
    model.load_state_dict(sft_state)
    loss_cfg = RLLossConfig(entropy_control=arm, kl_cov_ratio=args.kl_cov_ratio, kl_cov_coef=args.kl_cov_coef)
    cfg = RLConfig(envs=args.envs.split(","), prompts_per_step=args.prompts, rollouts_per_prompt=args.rollouts,
                   max_new_tokens=args.max_new_tokens, temperature=args.temperature, lr=args.lr,
                   mini_batches=args.mini_batches, heldout_items=args.heldout_items, seed=seed, loss=loss_cfg)
    trainer = RLTrainer(model, tok, proc, cfg)
    probe = EntropyProbe(trainer, args.probe_prompts, seed)
    if before is None:  # the SFT model's scores: the same for every arm of a seed
        g = trainer.heldout_reward()
        before = {"greedy": g.reward, "sampled": trainer.heldout_reward(temperature=args.temperature).reward,
                  "n": g.items}
    probes = [(0, probe(trainer))]
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        trainer.step()
        if step % args.probe_every == 0 or step == args.steps:
            probes.append((step, probe(trainer)))
            log(f"{arm} seed {seed} step {step}: probe entropy {probes[-1][1]:.3f}, sampled reward "
                f"{_mean(h['reward_mean'] for h in trainer.result.history[-args.probe_every:]):.3f}")
    seconds = time.perf_counter() - t0
    a = trainer.heldout_reward()
    after, n = a.reward, a.items
    after_sampled = trainer.heldout_reward(temperature=args.temperature).reward
    hist = trainer.result.history
    out = {"arm": arm, "seed": seed, "steps": args.steps, "seconds": seconds,
           "heldout_before": before["greedy"], "heldout_after": after, "heldout_items": n,
           "heldout_sampled_before": before["sampled"], "heldout_sampled_after": after_sampled,
           "probe_entropy": probes,
           "rollout_entropy": [h.get("entropy") for h in hist],
           "reward": [h["reward_mean"] for h in hist],
           "kept_groups": [h["kept_groups"] for h in hist],
           "kl_cov_frac": [h.get("kl_cov_frac") for h in hist]}
    log(f"{arm} seed {seed}: held-out greedy {before['greedy']:.3f} -> {after:.3f}, sampled "
        f"{before['sampled']:.3f} -> {after_sampled:.3f} (n={n}), probe entropy "
        f"{probes[0][1]:.3f} -> {probes[-1][1]:.3f}, {seconds:.0f}s")
    return out


# ---------------------------------------------------------------- report


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def print_tables(results: list[dict], args) -> None:
    arms = list(dict.fromkeys(r["arm"] for r in results))
    seeds = sorted({r["seed"] for r in results})
    by = {(r["arm"], r["seed"]): r for r in results}
    steps = [s for s, _ in results[0]["probe_entropy"]]
    print(f"\nProbe entropy (nats/token, fixed contexts) by step, mean over seeds {seeds}")
    print("step  " + "".join(f"{a:>10}" for a in arms))
    for i, s in enumerate(steps):
        print(f"{s:>4}  " + "".join(f"{_mean(by[(a, sd)]['probe_entropy'][i][1] for sd in seeds):>10.3f}" for a in arms))
    k = max(1, args.probe_every)
    print(f"\nRollout entropy / sampled reward, mean over windows of {k} steps")
    print("steps     " + "".join(f"{a + ' H':>12}{a + ' r':>12}" for a in arms))
    for s in range(0, args.steps, k):
        row = ""
        for a in arms:
            h = _mean(x for sd in seeds for x in by[(a, sd)]["rollout_entropy"][s:s + k])
            r = _mean(x for sd in seeds for x in by[(a, sd)]["reward"][s:s + k])
            row += f"{h:>12.3f}{r:>12.3f}"
        print(f"{s + 1:>3}-{min(s + k, args.steps):<4}  " + row)
    ref = "none" if "none" in arms else arms[-1]
    print(f"\nPer arm and seed (reference arm: {ref}); held-out reward before -> after RL, greedy and "
          f"sampled (T={args.temperature}, one sample per item); SE = sqrt((a(1-a)+b(1-b))/n)")
    print(f"{'arm':>9} {'seed':>4} {'H0':>7} {'H_end':>7} {'H/ref':>6} {'n':>5} {'greedy':>13} {'gain':>7} "
          f"{'gain/SE':>7} {'sampled':>13} {'gain':>7} {'gain/SE':>7} {'vs ref':>7}")
    for a in arms:
        for sd in seeds:
            r, rr = by[(a, sd)], by[(ref, sd)]
            h0, h1, href = r["probe_entropy"][0][1], r["probe_entropy"][-1][1], rr["probe_entropy"][-1][1]
            n = r["heldout_items"]
            cols = ""
            for kb, ka in (("heldout_before", "heldout_after"), ("heldout_sampled_before", "heldout_sampled_after")):
                b, af = r.get(kb, float("nan")), r.get(ka, float("nan"))
                se = se_diff(b, af, n)
                cols += f" {b:>6.3f}>{af:<6.3f} {af - b:>+7.3f} {(af - b) / max(se, 1e-9):>7.2f}"
            vs = r.get("heldout_sampled_after", float("nan")) - rr.get("heldout_sampled_after", float("nan"))
            print(f"{a:>9} {sd:>4} {h0:>7.3f} {h1:>7.3f} {h1 / max(href, 1e-9):>6.2f} {n:>5}{cols} {vs:>+7.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default=DEFAULT_ENVS, help="RL environments (comma-separated)")
    p.add_argument("--sft-envs", default=None, help="SFT environments (default: --envs)")
    p.add_argument("--sft-seconds", type=float, default=420.0,
                   help="SFT budget (the stage sizes its schedule from a probe and often ends early)")
    p.add_argument("--sft-per-env", type=int, default=800)
    p.add_argument("--sft-seed", type=int, default=0)
    p.add_argument("--arms", default="kl_cov,none", help="entropy controls to compare: kl_cov,none,clip_cov")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (default: RLConfig's)")
    p.add_argument("--rollouts", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--lr", type=float, default=2e-4, help="(the speedrun uses 3e-4: see docs/benchmarks.md)")
    p.add_argument("--mini-batches", type=int, default=None)
    p.add_argument("--kl-cov-ratio", type=float, default=None)
    p.add_argument("--kl-cov-coef", type=float, default=None)
    p.add_argument("--heldout-items", type=int, default=300)
    p.add_argument("--probe-every", type=int, default=10)
    p.add_argument("--probe-prompts", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--cache", default="/tmp/opens1_rl_bench")
    p.add_argument("--out", default="/tmp/rl_entropy.json")
    args = p.parse_args(argv)
    args.sft_envs = args.sft_envs or args.envs
    _fill_defaults(args)
    if args.steps < 1 or args.probe_every < 1:
        p.error("--steps and --probe-every must be >= 1")
    torch.set_num_threads(args.threads)

    import opens1

    t_start = time.perf_counter()
    tok = opens1.load_tokenizer()
    model, proc, sft_info = sft_model(args, tok)
    sft_state = copy.deepcopy(model.state_dict())
    del model
    results, before = [], {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            # held-out reward of the SFT model: greedy, so it is the same for every arm of a seed
            r = run_arm(args, tok, proc, sft_state, arm, seed, before.get(seed))
            before[seed] = {"greedy": r["heldout_before"], "sampled": r["heldout_sampled_before"],
                            "n": r["heldout_items"]}
            results.append(r)
    print_tables(results, args)
    report = {"args": vars(args), "sft": sft_info, "results": results,
              "wall_seconds": time.perf_counter() - t_start}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print(f"\nwall {report['wall_seconds']:.0f}s; results in {out}")
    return 0


def _fill_defaults(args) -> None:
    """Unset RL flags take RLConfig / RLLossConfig defaults, so the bench measures the defaults."""
    from opens1.rl.algorithms import RLLossConfig
    from opens1.rl.trainer import RLConfig

    rc, lc = RLConfig(), RLLossConfig()
    for flag, value in [("prompts", rc.prompts_per_step), ("rollouts", rc.rollouts_per_prompt),
                        ("max_new_tokens", rc.max_new_tokens), ("temperature", rc.temperature),
                        ("mini_batches", rc.mini_batches), ("kl_cov_ratio", lc.kl_cov_ratio),
                        ("kl_cov_coef", lc.kl_cov_coef)]:
        if getattr(args, flag) is None:
            setattr(args, flag, value)


if __name__ == "__main__":
    sys.exit(main())
