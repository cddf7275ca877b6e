"""Intern-S1 (InternS1ForConditionalGeneration): model.language_model.*, lm_head.*,
model.vision_tower.*, model.multi_modal_projector.*, and OpenS1's time-series tower under
model.ts_tower.* / model.ts_projector.* (Intern-S1's own name for the latter,
model.time_series_projector.*, is read too). OpenS1 saves in this layout, with its S1Config
under "opens1_config" for an exact round trip."""

from __future__ import annotations

import torch

from opens1.config import S1Config
from opens1.models.checkpoint.configs import (OPENS1_KEY, check_image_path, parse_text_config, parse_vision_config,
                                              text_config_to_hf, vision_config_to_hf, with_defaults)
from opens1.models.checkpoint.layout import ROTARY_IGNORE, Layout
from opens1.models.checkpoint.qwen3 import TEXT_EXPORT_TRANSFORMS, TEXT_TRANSFORMS


def _parse_interns1(d: dict) -> S1Config:
    """transformers' InternS1Config, with its defaults for missing keys (a vision_config that
    lists nothing is the default InternS1VisionConfig, a missing text_config the default
    Qwen3Config). No vision_config at all is a text-only model (how OpenS1 saves those)."""
    d = with_defaults(d, "interns1")
    tc = d.get("text_config") or {"model_type": "qwen3"}
    vc = d.get("vision_config")
    if vc is not None:
        check_image_path(d, with_defaults(vc, "interns1_vision"), "interns1")
    cfg = S1Config(text=parse_text_config(tc, "text_config"),
                   vision=parse_vision_config(vc, "interns1_vision") if vc is not None else None,
                   timeseries=None, name=d.get("_name_or_path") or "interns1")
    cfg.image_token_id = int(d["image_token_id"])
    cfg.downsample_ratio = d["downsample_ratio"]
    cfg.projector_hidden_act = d["projector_hidden_act"]
    return cfg


def _write_config(cfg: S1Config, dtype: torch.dtype) -> dict:
    """Intern-S1's InternS1Config, plus our own S1Config."""
    d = {
        "architectures": ["InternS1ForConditionalGeneration"],
        "model_type": "interns1",
        "text_config": text_config_to_hf(cfg.text),
        "image_token_id": cfg.image_token_id,
        "downsample_ratio": cfg.downsample_ratio,
        "projector_hidden_act": cfg.projector_hidden_act,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": cfg.text.tie_word_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
        OPENS1_KEY: cfg.to_dict(),
    }
    if cfg.vision is not None:
        d["vision_config"] = vision_config_to_hf(cfg.vision)
    return d


LAYOUT = Layout(
    "interns1", model_types=("interns1",), parse=_parse_interns1,
    renames=[
        (r"^model\.language_model\.", "language_model."),
        (r"^lm_head\.", "lm_head."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^model\.ts_tower\.", "ts_tower."),
        (r"^model\.ts_projector\.", "ts_projector."),
        (r"^model\.time_series_projector\.", "ts_projector."),
    ],
    transforms=TEXT_TRANSFORMS,
    export=[
        (r"^language_model\.", "model.language_model."),
        (r"^lm_head\.", "lm_head."),
        (r"^vision_tower\.", "model.vision_tower."),
        (r"^multi_modal_projector\.", "model.multi_modal_projector."),
        (r"^ts_tower\.", "model.ts_tower."),
        (r"^ts_projector\.", "model.ts_projector."),
    ],
    export_transforms=TEXT_EXPORT_TRANSFORMS,
    ignore=ROTARY_IGNORE,
    write_config=_write_config,
)
