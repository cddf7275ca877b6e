"""The speedrun's tasks and their SFT chats."""

from __future__ import annotations

from opens1.data.sources import read_envs
from opens1.envs import get_env
from opens1.speedrun.runtime import log

# The tasks SFT trains on and the evaluation scores, each one a scientist would recognise
# and each answer-balanced: ring, aromatic-ring and heteroatom counts of real drug-like
# molecules, G+C counts of real genes, and the dominant frequency of a sensor trace (the
# time-series tower's task).
TASKS = ["chem/ring_count", "chem/aromatic_rings", "chem/atom_count", "bio/gc_count", "physics/signal_frequency"]


def sft_samples(data, per_env: int, tasks: list[str]) -> tuple[list, list[str]]:
    """SFT chats for the tasks whose data exists under `data`: (samples, the tasks used)."""
    live = []
    for t in tasks:
        try:
            get_env(t, data_root=data)
        except (FileNotFoundError, ValueError) as e:
            log(f"task {t} skipped: {e}")
            continue
        live.append(t)
    return list(read_envs(data, per_env=per_env, names=live)), live
