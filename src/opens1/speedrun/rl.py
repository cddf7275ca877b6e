"""The RL stage: which task RL trains on, the recipe, the loop, and the held-out reward
before and after (greedy and sampled) beside the answer prior."""

from __future__ import annotations

import dataclasses
import math
import time

from opens1.rl.algorithms import RLLossConfig
from opens1.rl.trainer import HeldoutReward, RLConfig, RLResult, RLTrainer
from opens1.speedrun.config import SpeedrunConfig
from opens1.speedrun.runtime import duration, log

RL_CEILING = 0.85  # a task SFT already solves this well leaves RL nothing to learn
RL_FLOOR = 0.5  # below this, most groups of 8 rollouts share one wrong answer and are dropped
# The RL recipe (--set rl.KEY=VALUE overrides any of them), chosen by single-task probes on
# chem/atom_count from one SFT model (held-out greedy 0.41, 200-240 items, se of a difference
# 0.045): lr 1e-3 fell to 0.33, 16x4 rollouts with one update per batch to 0.32, GRPO and
# temperature 0.7 to 0.38; this setting held 0.41 while the sampled reward rose 0.32 -> 0.42.
# No setting raised the greedy score in ~2 minutes (docs/rl.md). In 20-minute runs lr 3e-4 on
# two tasks made the others forget (G+C 0.91 -> 0.15, aromatic rings 0.96 -> 0.68 in the final
# evaluation), so the rate is 1e-4: RL must not undo what SFT built for tasks it skips.
RL_SETTINGS = dict(lr=1e-4, mini_batches=4, partial_credit=0.5, sample_rounds=3)
HELDOUT_BATCH = 32


def choose_rl_envs(sft_eval: dict, candidates: list[str], *, ceiling: float = RL_CEILING,
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


def rl_heldout_items(scfg: SpeedrunConfig) -> int:
    """Held-out items for RL's before/after comparison: 40 per minute of budget, 16 to 400.
    At n=400 and rewards near 0.5 the standard error of the difference is 0.035."""
    if scfg.steps:
        return 400
    return max(16, min(400, int(scfg.minutes * 40)))


def rl_configs(settings: dict, **base) -> RLConfig:
    """RLConfig with `settings` applied over `base`: loss fields go to its RLLossConfig."""
    loss_fields = {f.name for f in dataclasses.fields(RLLossConfig)}
    loss = RLLossConfig(**{k: v for k, v in settings.items() if k in loss_fields})
    return RLConfig(**{**base, **{k: v for k, v in settings.items() if k not in loss_fields}, "loss": loss})


def run_rl(model, tok, proc, envs: list[str], *, seconds: float, data, seed: int, heldout_items: int,
           steps: int = 0, settings: dict | None = None) -> dict:
    """RL on `envs` for `seconds` (or exactly `steps`), measured on the same held-out items
    before and after; returns the stage's report entry."""
    cfg = rl_configs({**RL_SETTINGS, **(settings or {})}, envs=envs, data_root=data, prompts_per_step=8,
                     rollouts_per_prompt=8, max_new_tokens=16, temperature=1.0, heldout_items=heldout_items,
                     seed=seed, steps=10**9)
    trainer = RLTrainer(model, tok, proc, cfg)
    t0 = time.perf_counter()
    # held-out reward before and after on the same items, greedy and sampled (one sample per
    # item at the rollout temperature, fixed seeds).
    before = trainer.heldout_reward(batch=HELDOUT_BATCH, deadline=None if steps else t0 + 0.12 * seconds)
    n = before.items
    before_s = trainer.heldout_reward(items=n, batch=HELDOUT_BATCH, temperature=cfg.temperature).reward
    eval_time = time.perf_counter() - t0
    res = rl_loop(trainer, steps=steps or None,
                  seconds=None if steps else max(0.0, seconds - 1.15 * eval_time - (time.perf_counter() - t0)))
    after = trainer.heldout_reward(items=n, batch=HELDOUT_BATCH)
    after_s = trainer.heldout_reward(items=n, batch=HELDOUT_BATCH, temperature=cfg.temperature).reward
    prior = trainer.answer_prior_reward(n)  # always the most common answer
    return _rl_entry(res, envs, before=before, after=after, prior=prior, sampled=(before_s, after_s), t0=t0)


def _rl_entry(res: RLResult, envs: list[str], *, before: HeldoutReward, after: HeldoutReward,
              prior: HeldoutReward, sampled: tuple[float, float], t0: float) -> dict:
    """The RL stage's report entry (and its log line) from the loop's result and the held-out rewards."""
    n = before.items
    b, a, p = before.reward, after.reward, prior.reward
    before_s, after_s = sampled
    se = math.sqrt((b * (1 - b) + a * (1 - a)) / max(1, n))
    se_s = math.sqrt((before_s * (1 - before_s) + after_s * (1 - after_s)) / max(1, n))
    log(f"rl: {res.steps} steps on {envs}; held-out reward greedy {b:.3f} -> {a:.3f} (se of diff {se:.3f}), "
        f"sampled {before_s:.3f} -> {after_s:.3f} (se {se_s:.3f}), n={n}; answer prior {p:.3f}")
    by_env = {e: {"before": before.by_env[e]["reward"], "after": after.by_env.get(e, {}).get("reward"),
                  "prior": prior.by_env.get(e, {}).get("reward"), "items": before.by_env[e]["items"]}
              for e in before.by_env}
    return {"loss": [h.get("bc_loss", 0.0) + h.get("pg_loss", 0.0) for h in res.history if "entropy" in h],
            "reward": res.curve("reward_mean"), "entropy": res.curve("entropy"),
            "steps": res.steps, "tokens": res.tokens, "seconds": time.perf_counter() - t0,
            "envs": envs, "heldout_reward_before": b, "heldout_reward_after": a,
            "heldout_items": n, "stderr_of_difference": se, "heldout_by_env": by_env,
            "heldout_by_env_before": before.by_env, "heldout_by_env_after": after.by_env,
            "heldout_sampled_before": before_s, "heldout_sampled_after": after_s, "stderr_of_difference_sampled": se_s,
            "heldout_answer_prior": p, "heldout_answer_prior_by_env": prior.by_env}


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
                f"{m.get('drawn_prompts', 0)}  entropy {m.get('entropy', float('nan')):.3f}  ETA {duration(left)}")
    trainer.result.seconds += time.perf_counter() - t0
    return trainer.result
