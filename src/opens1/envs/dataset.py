"""One spine for SFT, RL and evaluation: draw data from environments by split.

- `sft_examples`: chat conversations whose assistant turn is the environment's
  verified worked answer (`sft_response`, kept only if the environment's own
  verifier gives it 1.0: Intern-S1 keeps only rewarded responses in SFT).
- `rl_prompts`: cases to roll out and score with `env.verify`.
- `eval_cases`: the held-out cases the harness uses.

SFT and RL helpers read only the train split, by construction, so nothing from
a held-out manifest can reach training through them. Environments are
interleaved round-robin so a mixture is balanced unless weights say otherwise.
"""

from __future__ import annotations

import random

from opens1.envs.base import Case
from opens1.envs.registry import get_env


def _weights(names: list[str], weights: dict[str, float] | None) -> dict[str, float]:
    w = {n: float((weights or {}).get(n, 1.0)) for n in names}
    if any(v < 0 for v in w.values()) or not any(w.values()):
        raise ValueError(f"mixture weights must be >= 0 and not all zero: {w}")
    return w


def rl_prompts(names: list[str], n: int, *, data_root=None, difficulty: str | None = None,
               weights: dict[str, float] | None = None, seed: int = 0) -> list[Case]:
    """n training cases drawn from the environments in proportion to `weights`."""
    envs = {name: get_env(name, data_root) for name in names}
    w = _weights(list(envs), weights)
    rng = random.Random(seed)
    order = rng.choices(list(envs), weights=[w[k] for k in envs], k=n)
    out = []
    for name in order:
        env = envs[name]
        total = env.num_cases("train", difficulty)
        if total == 0:
            raise ValueError(f"{name} has no training cases (difficulty {difficulty}); "
                             "held-out-only sources cannot feed RL")
        out.append(env.case(rng.randrange(total), "train", difficulty))
    return out


def sft_examples(names: list[str], n_per_env: int, *, data_root=None, difficulty: str | None = None,
                 start: int = 0) -> list[dict]:
    """Verified (prompt, worked answer) conversations from the train split.

    Each example: {"messages": [...prompt turns, assistant turn], "source": env name, "case_id"}.
    """
    per_env = []
    for name in names:
        env = get_env(name, data_root)
        rows = []
        total = env.num_cases("train", difficulty)
        for i in range(start, min(start + n_per_env, total)):
            case = env.case(i, "train", difficulty)
            target = env.sft_response(case)
            if target is None or env.verify(target, case).score < 1.0:
                continue  # only responses the verifier rewards
            rows.append({"messages": case.messages() + [{"role": "assistant", "content": target}],
                         "source": name, "case_id": case.id})
        per_env.append(rows)
    # Round-robin interleave so a prefix of the list is already a balanced mixture.
    out = []
    for i in range(max((len(r) for r in per_env), default=0)):
        out += [rows[i] for rows in per_env if i < len(rows)]
    return out


def eval_cases(name: str, n: int, data_root=None, difficulty: str | None = None) -> list[Case]:
    """The first n held-out cases (the evaluation set is a fixed prefix, hence comparable)."""
    return get_env(name, data_root).cases(n, "heldout", difficulty)
