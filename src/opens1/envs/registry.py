"""The environments by name: every built-in environment module's `ENVS`, plus what is
registered at run time (your items, `opens1.data.user.register_items`).

    list_envs(domain=None)      sorted names ("chem/formula", "logic/counting", ...)
    get_env(name, data_root)    an instance (FileNotFoundError when its data is missing)
    env_class(name)             the class (verifying needs no data root: env_class(n)(None))
    check_env_names(names)      a UserError with suggestions for a name that is not registered

A bare task name ("gc_content") resolves when it is unambiguous.
"""

from __future__ import annotations

import glob
from typing import Iterable

from opens1.common.errors import UserError, did_you_mean
from opens1.envs import biology, chemistry, ecg, logic, physics, signals
from opens1.envs import math as maths
from opens1.envs.base import Env

BUILTIN_MODULES = (biology, chemistry, ecg, logic, maths, physics, signals)

_REGISTRY: dict[str, type[Env]] = {}


def register(cls: type[Env], *, replace: bool = False) -> type[Env]:
    """Add an environment class under its `name`; `replace` lets a run-time registration
    (a second `--data` of the same file, a test) take over a name."""
    if not cls.name or (cls.name in _REGISTRY and not replace):
        raise ValueError(f"environment name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _register_builtin() -> None:
    for module in BUILTIN_MODULES:
        for cls in module.ENVS:
            register(cls)


_register_builtin()


def list_envs(domain: str | None = None, data_root=None, available_only: bool = False) -> list[str]:
    return sorted(n for n, c in _REGISTRY.items()
                  if (domain is None or c.domain == domain) and (not available_only or c.available(data_root)))


def resolve_name(name: str) -> str:
    """A registered name; a bare task name ("gc_content") resolves if it is unambiguous."""
    if name in _REGISTRY:
        return name
    hits = [n for n in _REGISTRY if n.split("/", 1)[-1] == name]
    if len(hits) == 1:
        return hits[0]
    raise ValueError(f"unknown environment {name!r}; known: {', '.join(sorted(_REGISTRY))}")


def get_env(name: str, data_root=None) -> Env:
    cls = _REGISTRY[resolve_name(name)]
    if not cls.available(data_root):
        raise FileNotFoundError(f"environment {name!r} needs data not found under data root {data_root!r}")
    return cls(data_root)


def env_class(name: str) -> type[Env]:
    return _REGISTRY[resolve_name(name)]


def check_env_names(names: Iterable[str], what: str = "environment") -> None:
    """Every name (not glob) is a registered environment, or a UserError with suggestions."""
    known = list_envs()
    for name in names:
        if glob.has_magic(name) or name in known or any(k.split("/", 1)[-1] == name for k in known):
            continue
        raise UserError(f"unknown {what} {name!r}{did_you_mean(name, known)}; `opens1 eval --list` shows them all")
