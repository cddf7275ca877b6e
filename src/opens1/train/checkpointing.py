"""Atomic, pickle-free training checkpoints that resume exactly.

Layout of one checkpoint (`<out_dir>/checkpoints/step_00000120/`):
    model.safetensors        full (unsharded) model state, keyed by parameter name
    optimizer.safetensors    every tensor of the optimizer state, "state/<param>/<key>"
    optimizer.json           the rest of the optimizer state (param_groups, scalar entries)
    rng.safetensors          RNG states of every rank as uint8 tensors (torch CPU/CUDA,
                             Python `random`, NumPy) so dropout and sampling replay exactly
    meta.json                step, tokens, TrainConfig, data position of every rank,
                             git revision, data fingerprint, world size, library versions
`<out_dir>/checkpoints/latest` names the newest complete checkpoint.

Design choices
- Atomic: everything is written into a hidden temporary directory, fsync'ed, then
  renamed into place with os.replace; `latest` is rewritten the same way. A crash (or
  SIGKILL, or a full disk) mid-write leaves the previous checkpoint and pointer intact,
  and a failed write removes its temporary directory and says so.
- Never pickle: weights and optimizer tensors are safetensors, everything else JSON, so
  a checkpoint from an untrusted source cannot execute code when loaded.
- Sharding-agnostic: state is gathered through torch.distributed.checkpoint.state_dict
  (full, unsharded state keyed by parameter names), so a checkpoint written by 2 FSDP
  ranks loads into 1 process and vice versa. Rank 0 writes; the other ranks only send.
  This is right for models up to a few billion parameters; beyond that a sharded writer
  (torch.distributed.checkpoint.save) would be the next step.
- The LR and batch schedules are functions of the step, so "scheduler state" is the step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

CKPT_DIR = "checkpoints"
LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; earlier checkpoints are untouched."""


# ---------------------------------------------------------------- distributed helpers


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    if _world() > 1:
        dist.barrier()


def _gather_objects(obj: Any) -> list[Any]:
    """Every rank's small JSON-able object, on every rank (in-process transport only)."""
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------- state <-> flat tensors


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full model state on CPU (gathered from FSDP shards; empty on ranks other than 0)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=_world() > 1, cpu_offload=_world() > 1)
    sd = get_model_state_dict(model, options=opts)
    return {k: v.detach().to("cpu") for k, v in sd.items()}


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=_world() > 1, cpu_offload=_world() > 1)
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


def fingerprint_documents(docs) -> str:
    """sha256 over the token ids and labels of a list of packing.Documents."""
    h = hashlib.sha256()
    for d in docs:
        h.update(d.input_ids.numpy().tobytes())
        h.update(d.labels.numpy().tobytes())
        if d.pixel_values is not None:
            h.update(str(tuple(d.pixel_values.shape)).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- save / load


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


def _unshare(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights): copy the repeats
    seen: set[int] = set()
    out = {}
    for k, v in sd.items():
        v = v.contiguous()
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def save_checkpoint(out_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    meta: dict | None = None, data_state: dict | None = None, keep: int = 0) -> Path | None:
    """Write checkpoint `step` atomically; returns its path on rank 0 (None elsewhere).

    Collective: every rank must call it. `meta` is recorded as is (config, tokens, ...);
    `data_state` is this rank's data position. `keep` > 0 prunes all but the newest `keep`."""
    root = Path(out_dir) / CKPT_DIR
    final = root / f"step_{step:08d}"
    msd = model_state(model)
    osd = optimizer_state(model, optimizer) if optimizer is not None else None
    rngs = _gather_objects({k: v.tolist() for k, v in rng_state().items()})
    datas = _gather_objects(data_state)
    err: str | None = None
    if _rank() == 0:
        tmp = root / f".tmp_step_{step:08d}_{os.getpid()}_{int(time.time() * 1e3)}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK):
                raise PermissionError(errno.EACCES, "directory is not writable", str(root))
            tmp.mkdir()
            save_file(_unshare(msd), str(tmp / "model.safetensors"))
            if osd is not None:
                tensors, rest = flatten_optimizer_state(osd)
                save_file(tensors, str(tmp / "optimizer.safetensors"))
                _write_json(tmp / "optimizer.json", rest)
            rng_tensors = {f"rank{r}/{k}": torch.tensor(v, dtype=torch.uint8)
                           for r, st in enumerate(rngs) for k, v in st.items()}
            save_file(rng_tensors, str(tmp / "rng.safetensors"))
            record = dict(meta or {})
            record.update(step=step, world_size=_world(), data_state=datas, saved_at=time.time(),
                          torch_version=torch.__version__, format="opens1-ckpt-v1")
            record.setdefault("git_revision", git_revision())
            _write_json(tmp / "meta.json", record)
            for f in tmp.iterdir():  # the safetensors files too, before the rename makes them visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():  # a re-save of the same step (e.g. SIGTERM right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
            _point_latest(root, final.name)
            if keep > 0:
                _prune(root, keep)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            why = "the disk is full" if e.errno == errno.ENOSPC else (
                "the directory is not writable" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else str(e))
            prev = latest_checkpoint(out_dir)
            err = (f"checkpoint for step {step} was not written to {root}: {why}; "
                   f"the previous checkpoint ({prev if prev else 'none'}) is intact")
    errs = _gather_objects(err)
    first = next((e for e in errs if e), None)
    if first:
        raise CheckpointError(first)
    return final if _rank() == 0 else None


def _point_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.{os.getpid()}"
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, root / LATEST)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `out_dir` (or `out_dir` itself if it is one)."""
    p = Path(out_dir)
    if (p / "meta.json").is_file():
        return p
    root = p / CKPT_DIR
    ptr = root / LATEST
    if ptr.is_file():
        cand = root / ptr.read_text(encoding="utf-8").strip()
        if (cand / "meta.json").is_file():
            return cand
    done = sorted(q for q in root.glob("step_*") if (q / "meta.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def read_meta(ckpt: str | Path) -> dict:
    path = Path(ckpt) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt} is not a checkpoint (no meta.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_checkpoint(ckpt: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> dict:
    """Load model (and optimizer, RNG) state from a checkpoint into (possibly FSDP) modules.
    Collective under torch.distributed. Returns meta.json, with this rank's `data_state`."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, set_model_state_dict, set_optimizer_state_dict)

    ckpt = Path(ckpt)
    meta = read_meta(ckpt)
    if meta.get("format") != "opens1-ckpt-v1":
        raise CheckpointError(f"{ckpt}: unknown checkpoint format {meta.get('format')!r}")
    dist_on = _world() > 1
    opts = StateDictOptions(full_state_dict=dist_on, broadcast_from_rank0=dist_on)
    # parameters that never received a gradient (e.g. the vision tower in text-only
    # training) have no optimizer state: not an error, exactly as in an uninterrupted run
    oopts = StateDictOptions(full_state_dict=dist_on, broadcast_from_rank0=dist_on, strict=False)
    msd = load_file(str(ckpt / "model.safetensors")) if (_rank() == 0 or not dist_on) else {}
    set_model_state_dict(model, msd, options=opts)
    if optimizer is not None:
        if not (ckpt / "optimizer.safetensors").is_file():
            raise CheckpointError(f"{ckpt} has no optimizer state")
        osd: dict = {}
        if _rank() == 0 or not dist_on:
            rest = json.loads((ckpt / "optimizer.json").read_text(encoding="utf-8"))
            osd = unflatten_optimizer_state(load_file(str(ckpt / "optimizer.safetensors")), rest)
        set_optimizer_state_dict(model, optimizer, osd, options=oopts)
    saved_world = int(meta.get("world_size", 1))
    if restore_rng:
        rngs = load_file(str(ckpt / "rng.safetensors"))
        r = _rank() if _rank() < saved_world else 0
        mine = {k.split("/", 1)[1]: v for k, v in rngs.items() if k.startswith(f"rank{r}/")}
        set_rng_state(mine)
    states = meta.get("data_state") or [None]
    meta["data_state"] = states[_rank()] if _rank() < len(states) else states[0]
    return meta
