"""What a training state is, as safetensors and JSON can hold it (no pickle): the full model
and optimizer state gathered from FSDP shards, the optimizer state flattened to tensors plus
JSON, every RNG as uint8 tensors, and the code revision. train/checkpointing.py writes these
atomically and resumes from them."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opens1.train.distributed import dist_info


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; earlier checkpoints are untouched."""


# ---------------------------------------------------------------- state <-> flat tensors


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full model state on CPU (gathered from FSDP shards; empty on ranks other than 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sharded = dist_info()[1] > 1
    opts = StateDictOptions(full_state_dict=sharded, cpu_offload=sharded)
    sd = get_model_state_dict(model, options=opts)
    return {k: v.detach().to("cpu") for k, v in sd.items()}


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sharded = dist_info()[1] > 1
    opts = StateDictOptions(full_state_dict=sharded, cpu_offload=sharded)
    return get_optimizer_state_dict(model, optimizer, options=opts)


def flatten_optimizer_state(osd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """{"state": {param: {key: value}}, "param_groups": [...]} -> (tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, entries in osd.get("state", {}).items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{param}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(param), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd.get("param_groups", [])]
    return tensors, {"param_groups": groups, "scalars": scalars, "format": "opens1-optim-v1"}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    if rest.get("format") != "opens1-optim-v1":
        raise CheckpointError(f"unknown optimizer state format {rest.get('format')!r}")
    state: dict[str, dict[str, Any]] = {}
    for name, t in tensors.items():
        # "state/<param fqn>/<key>": fqns hold dots, never slashes; keys are the last part
        head, _, tail = name.partition("/")
        param, _, key = tail.rpartition("/")
        if head != "state" or not param or not key:
            raise CheckpointError(f"bad optimizer tensor name {name!r}")
        state.setdefault(param, {})[key] = t
    for param, entries in rest.get("scalars", {}).items():
        state.setdefault(param, {}).update(entries)
    groups = []
    for g in rest["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- RNG states as uint8 tensors


def rng_state() -> dict[str, torch.Tensor]:
    """This process's RNG states, each a uint8 tensor."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    version, internal, gauss = random.getstate()
    py = np.asarray(internal, dtype=np.uint32)  # 624 words + position
    out["python"] = torch.from_numpy(py.view(np.uint8).copy())
    out["python_meta"] = torch.tensor(list(json.dumps([version, gauss]).encode()), dtype=torch.uint8)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.uint8).copy())
    out["numpy_meta"] = torch.tensor(list(json.dumps([kind, int(pos), int(has_gauss), float(cached)]).encode()),
                                     dtype=torch.uint8)
    return out


def set_rng_state(s: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(s["torch"])
    cuda = sorted(k for k in s if k.startswith("cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s[k] for k in cuda][: torch.cuda.device_count()])
    version, gauss = json.loads(bytes(s["python_meta"].tolist()).decode())
    internal = tuple(int(x) for x in s["python"].numpy().view(np.uint32))
    random.setstate((version, internal, gauss))
    kind, pos, has_gauss, cached = json.loads(bytes(s["numpy_meta"].tolist()).decode())
    np.random.set_state((kind, s["numpy"].numpy().view(np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------- provenance


def git_revision(path: str | Path | None = None) -> str | None:
    """HEAD of the repository holding this package (with "-dirty" if modified), or None."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
