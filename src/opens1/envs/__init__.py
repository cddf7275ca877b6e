"""Verifiable science environments (InternBootcamp-style): chemistry, biology,
physics, math, logic and ECG tasks with fixed train/held-out splits.

    from opens1.envs import list_envs, get_env
    env = get_env("chem/formula")
    case = env.case(0, split="train", difficulty="easy")
    env.verify("Answer: C2H6O", case).score

Data for training and evaluation from the same environments: `opens1.envs.dataset`
(`sft_examples`, `rl_prompts` read only the train split; `eval_cases` the held-out one).
Names: `list_envs()` (`opens1.envs.registry`); a bare task name ("gc_content") resolves when unambiguous.
"""

from opens1.envs.base import Case, Env, stable_hash
from opens1.envs.registry import check_env_names, env_class, get_env, list_envs

__all__ = ["Case", "Env", "check_env_names", "env_class", "get_env", "list_envs", "stable_hash"]
