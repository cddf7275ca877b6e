"""Atomic, pickle-free training checkpoints that resume exactly.

Layout of one checkpoint (`<out_dir>/checkpoints/step_00000120/`):
    model.safetensors        full (unsharded) model state, keyed by parameter name
    optimizer.safetensors    every tensor of the optimizer state, "state/<param>/<key>"
    optimizer.json           the rest of the optimizer state (param_groups, scalar entries)
    rng.safetensors          RNG states of every rank as uint8 tensors (torch CPU/CUDA,
                             Python `random`, NumPy) so dropout and sampling replay exactly
    meta.json                step, tokens, TrainConfig, data position of every rank,
                             git revision, data fingerprint, world size, library versions,
                             the size and sha256 of every other file, and its own sha256
`<out_dir>/checkpoints/latest` names the newest complete checkpoint.

Design choices
- Atomic: everything is written into a hidden temporary directory, fsync'ed, then
  renamed into place with os.replace; `latest` is rewritten the same way. A crash (or
  SIGKILL, or a full disk) mid-write leaves the previous checkpoint and pointer intact.
  A failed write (any error, a full disk included: safetensors reports it as its own
  SafetensorError) removes its temporary files and raises CheckpointError; temporary
  directories of killed processes are removed by the next save or resume.
- Verified: meta.json records each file's size and sha256 (and its own), checked when a
  checkpoint is resumed from. latest_checkpoint skips a truncated or bit-flipped newest
  checkpoint with a warning naming it and returns the newest intact one (keep_checkpoints
  >= 2 keeps one to fall back to).
- Never pickle: weights and optimizer tensors are safetensors, everything else JSON, so
  a checkpoint from an untrusted source cannot execute code when loaded.
- Sharding-agnostic: state is gathered through torch.distributed.checkpoint.state_dict
  (full, unsharded state keyed by parameter names; train/state.py), so a checkpoint
  written by 2 FSDP ranks loads into 1 process and vice versa. Rank 0 writes; the other
  ranks only send.
  This is right for models up to a few billion parameters; beyond that a sharded writer
  (torch.distributed.checkpoint.save) would be the next step.
- The LR and batch schedules are functions of the step, so "scheduler state" is the step.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from opens1.train.state import (CheckpointError, flatten_optimizer_state, git_revision, model_state, optimizer_state,
                                rng_state, set_rng_state, unflatten_optimizer_state)

CKPT_DIR = "checkpoints"
LATEST = "latest"


# ---------------------------------------------------------------- distributed helpers


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_objects(obj: Any) -> list[Any]:
    """Every rank's small JSON-able object, on every rank (in-process transport only)."""
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)  # hashlib releases the GIL: files hash in parallel threads
    return h.hexdigest()


def _digests(folder: Path, names: list[str]) -> dict[str, dict]:
    with ThreadPoolExecutor(max_workers=min(len(names), 4) or 1) as ex:
        sums = list(ex.map(lambda n: _sha256(folder / n), names))
    return {n: {"size": (folder / n).stat().st_size, "sha256": h} for n, h in zip(names, sums)}


def _meta_digest(record: dict) -> str:
    """sha256 of the canonical JSON of meta.json without its own digest field."""
    body = {k: v for k, v in json.loads(json.dumps(record, default=str)).items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _why(e: BaseException) -> str:
    """A short reason for a failed write; safetensors reports a full disk as its own
    SafetensorError ("... IoError(Os { code: 28, kind: StorageFull ...")."""
    text = str(e)
    if getattr(e, "errno", None) == errno.ENOSPC or re.search(r"code: 28\b|StorageFull|No space left", text):
        return "the disk is full"
    if getattr(e, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the directory is not writable"
    return f"{type(e).__name__}: {text[:300]}"


_TMP_RE = re.compile(r"^\.tmp_step_\d+_(\d+)_\d+$|^\.latest\.(\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete the temporary files and directories that killed saves left under `root`
    (their writer's pid is not running); returns what was removed."""
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        m = _TMP_RE.match(p.name)
        if m is None:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def save_checkpoint(out_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    *, meta: dict | None = None, data_state: dict | None = None, keep: int = 0) -> Path | None:
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
            remove_stale_temps(root)
            tmp.mkdir()
            save_file(_unshare(msd), str(tmp / "model.safetensors"))
            if osd is not None:
                tensors, rest = flatten_optimizer_state(osd)
                save_file(tensors, str(tmp / "optimizer.safetensors"))
                _write_json(tmp / "optimizer.json", rest)
            rng_tensors = {f"rank{r}/{k}": torch.tensor(v, dtype=torch.uint8)
                           for r, st in enumerate(rngs) for k, v in st.items()}
            save_file(rng_tensors, str(tmp / "rng.safetensors"))
            for f in tmp.iterdir():  # the safetensors files too, before the rename makes them visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            record = dict(meta or {})
            record.update(step=step, world_size=_world(), data_state=datas, saved_at=time.time(),
                          torch_version=torch.__version__, format="opens1-ckpt-v1",
                          files=_digests(tmp, sorted(f.name for f in tmp.iterdir())))
            record.setdefault("git_revision", git_revision())
            record["meta_sha256"] = _meta_digest(record)
            _write_json(tmp / "meta.json", record)
            if final.exists():  # a re-save of the same step (e.g. SIGTERM right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
            _point_latest(root, final.name)
            if keep > 0:
                _prune(root, keep)
        except Exception as e:  # noqa: BLE001  OSError, SafetensorError (a full disk), anything: clean up
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                (root / f".{LATEST}.{os.getpid()}").unlink(missing_ok=True)
            except OSError:
                pass
            prev = _pointed(root)
            err = (f"checkpoint for step {step} was not written to {root}: {_why(e)}; "
                   f"the previous checkpoint ({prev if prev else 'none'}) is intact")
        except BaseException:  # KeyboardInterrupt: no debris either
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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


def _pointed(root: Path) -> Path | None:
    """The checkpoint `latest` names, unverified (for messages)."""
    try:
        cand = root / (root / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return cand if (cand / "meta.json").is_file() else None


# Checkpoints verified in this process, with the (size, mtime) of their files at the
# time: load_checkpoint does not hash them a second time right after latest_checkpoint.
_VERIFIED: dict[str, tuple] = {}


def _stat_key(ckpt: Path) -> tuple:
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in ckpt.iterdir() if f.is_file()))


def verify_checkpoint(ckpt: str | Path) -> str | None:
    """Why `ckpt` cannot be resumed from (None if it is intact): meta.json missing, not
    JSON or altered, a file missing, truncated or with another sha256. Checkpoints written
    before checksums existed are only checked for a readable meta.json and model header."""
    ckpt = Path(ckpt)
    try:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no meta.json"
    except (OSError, ValueError) as e:
        return f"meta.json is unreadable ({type(e).__name__}: {e})"
    if not isinstance(meta, dict):
        return "meta.json is not an object"
    key = str(ckpt.resolve())
    try:
        if _VERIFIED.get(key) == _stat_key(ckpt):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    if "files" not in meta:  # an older checkpoint: structure only
        try:
            with safe_open(str(ckpt / "model.safetensors"), "pt"):
                pass
        except Exception as e:  # noqa: BLE001  safetensors raises its own error types
            return f"model.safetensors is unreadable ({type(e).__name__}: {e})"
        return None
    if meta.get("meta_sha256") != _meta_digest(meta):
        return "meta.json does not match its checksum"
    for name, want in meta["files"].items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["size"]:
            return f"{name} has {f.stat().st_size} bytes, {want['size']} were written (truncated?)"
        if _sha256(f) != want["sha256"]:
            return f"{name} does not match its sha256 (corrupted)"
    _VERIFIED[key] = _stat_key(ckpt)
    return None


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest intact checkpoint under `out_dir` (or `out_dir` itself if it is one).

    A newest checkpoint that fails verify_checkpoint (a truncated file, a flipped bit, a
    half-written meta.json) is skipped with a warning naming it, and the next newest is
    tried; CheckpointError if there are checkpoints and none is intact, or if `out_dir`
    is itself a checkpoint and is damaged. Also removes temporary directories left by
    killed saves (rank 0)."""
    p = Path(out_dir)
    if (p / "meta.json").is_file():
        why = verify_checkpoint(p)
        if why:
            raise CheckpointError(f"{p} cannot be resumed from: {why}")
        return p
    root = p / CKPT_DIR
    if not root.is_dir():
        return None
    if _rank() == 0:
        remove_stale_temps(root)
    pointed = _pointed(root)
    cands = ([pointed] if pointed else []) + sorted(
        (q for q in root.glob("step_*") if q.is_dir() and q != pointed), reverse=True)
    bad = []
    for cand in cands:
        why = verify_checkpoint(cand)
        if why is None:
            return cand
        bad.append(f"{cand.name}: {why}")
        warnings.warn(f"checkpoint {cand} is damaged ({why}); trying an older one", RuntimeWarning, stacklevel=2)
    if bad:
        raise CheckpointError(f"no intact checkpoint in {root}: " + "; ".join(bad))
    return None


def read_meta(ckpt: str | Path) -> dict:
    path = Path(ckpt) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt} is not a checkpoint (no meta.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{ckpt}: meta.json is not valid JSON ({e})") from None


def load_checkpoint(ckpt: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                    restore_rng: bool = True) -> dict:
    """Load model (and optimizer, RNG) state from a checkpoint into (possibly FSDP) modules.
    Collective under torch.distributed. Returns meta.json, with this rank's `data_state`."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, set_model_state_dict, set_optimizer_state_dict)

    ckpt = Path(ckpt)
    why = verify_checkpoint(ckpt)
    if why:
        raise CheckpointError(f"{ckpt} cannot be loaded: {why}")
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
