"""Verifiable science environments (InternBootcamp-style): chemistry, biology,
physics, math, logic and ECG tasks with fixed train/held-out splits.

    from opens1.envs import list_envs, get_env
    env = get_env("chem/formula")
    case = env.case(0, split="train", difficulty="easy")
    env.verify("Answer: C2H6O", case).score
"""

from opens1.envs.base import Case, Env, get_env, list_envs, stable_hash

__all__ = ["Case", "Env", "get_env", "list_envs", "stable_hash"]
