"""Every checkpoint layout OpenS1 reads, by name and by config.json `model_type`. A new
layout is a module with its Layout (see layout.py) added to the tuple below."""

from __future__ import annotations

from opens1.config import S1Config
from opens1.models.checkpoint import interns1, internvl, internvl_chat, qwen3
from opens1.models.checkpoint.configs import OPENS1_KEY, check_config_limits
from opens1.models.checkpoint.layout import Layout

LAYOUTS: dict[str, Layout] = {m.LAYOUT.name: m.LAYOUT for m in (qwen3, interns1, internvl, internvl_chat)}
BY_MODEL_TYPE: dict[str, Layout] = {mt: lay for lay in LAYOUTS.values() for mt in lay.model_types}
WRITABLE = tuple(name for name, lay in LAYOUTS.items() if lay.write_config is not None)


def writable_layout(name: str) -> Layout:
    if name not in WRITABLE:
        raise ValueError(f"cannot write layout {name!r}; writable: {', '.join(WRITABLE)}")
    return LAYOUTS[name]


def parse_config(d: dict) -> tuple[S1Config, str]:
    """config.json dict -> (S1Config, layout name); sizes past CONFIG_LIMITS are a ValueError."""
    mt = d.get("model_type")
    if mt not in BY_MODEL_TYPE:
        raise ValueError(f"unsupported model_type {mt!r}; known: {', '.join(BY_MODEL_TYPE)}")
    layout = BY_MODEL_TYPE[mt]
    cfg = S1Config.from_dict(d[OPENS1_KEY]) if OPENS1_KEY in d else layout.parse(d)  # our own save: exact
    check_config_limits(cfg)
    return cfg, layout.name
