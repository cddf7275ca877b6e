"""InternVL as transformers writes it (InternVLForConditionalGeneration, model_type
"internvl"): read into the Intern-S1 module tree, and written by `opens1 model export
--layout internvl` so that transformers (and vLLM's InternVL support) load OpenS1 models.
It has no time-series tower: that is left out, and the export says so."""

from __future__ import annotations

import torch

from opens1.config import S1Config
from opens1.models.checkpoint.configs import (OPENS1_KEY, check_image_path, check_text_model_type, need,
                                              parse_text_config, parse_vision_config, text_config_to_hf,
                                              vision_config_to_hf, with_defaults)
from opens1.models.checkpoint.layout import ROTARY_IGNORE, Layout
from opens1.models.checkpoint.qwen3 import TEXT_EXPORT_TRANSFORMS, TEXT_TRANSFORMS


def _parse_internvl(d: dict) -> S1Config:
    """transformers' InternVLConfig, with its defaults for missing keys. Tying follows
    transformers 5: the top-level tie_word_embeddings (default True) wins over the text
    config's. The text config is required (InternVL's default text model, Qwen2, is not
    supported)."""
    d = with_defaults(d, "internvl")
    tc = dict(need(d, "text_config", "internvl"))
    vc = with_defaults(d.get("vision_config") or {}, "internvl_vision")
    check_text_model_type(tc, "internvl text_config")
    check_image_path(d, vc, "internvl")
    tc["tie_word_embeddings"] = d["tie_word_embeddings"]
    cfg = S1Config(text=parse_text_config(tc, "text_config"), vision=parse_vision_config(vc, "internvl_vision"),
                   timeseries=None, name=d.get("_name_or_path") or "internvl", model_type="interns1")
    cfg.image_token_id = int(d["image_token_id"])
    cfg.downsample_ratio = d["downsample_ratio"]
    cfg.projector_hidden_act = d["projector_hidden_act"]
    return cfg


def _write_config(cfg: S1Config, dtype: torch.dtype) -> dict:
    """transformers' InternVLConfig, plus our own S1Config (without the time-series tower)."""
    if cfg.vision is None:
        raise ValueError("the internvl layout needs a vision tower; this model is text-only")
    text = dict(text_config_to_hf(cfg.text), tie_word_embeddings=cfg.text.tie_word_embeddings)
    return {
        "architectures": ["InternVLForConditionalGeneration"],
        "model_type": "internvl",
        "text_config": text,
        "vision_config": vision_config_to_hf(cfg.vision, "internvl_vision"),
        "image_token_id": cfg.image_token_id,
        "image_seq_length": cfg.image_tokens_per_tile,
        "downsample_ratio": cfg.downsample_ratio,
        "projector_hidden_act": cfg.projector_hidden_act,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": cfg.text.tie_word_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
        OPENS1_KEY: cfg.replace(timeseries=None).to_dict(),
    }


def _preprocessor_configs(cfg: S1Config) -> dict[str, dict]:
    """preprocessor_config.json / processor_config.json for transformers' InternVL processor,
    with this model's tiling (the real Intern-S1 files have the same fields)."""
    v = cfg.vision
    image = {
        "image_processor_type": "GotOcr2ImageProcessorFast", "processor_class": "InternVLProcessor",
        "crop_to_patches": True, "min_patches": v.min_tiles, "max_patches": v.max_tiles,
        "size": {"height": v.image_size, "width": v.image_size}, "do_resize": True, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }  # fmt: skip
    return {"preprocessor_config.json": image,
            "processor_config.json": {"image_seq_length": cfg.image_tokens_per_tile, "processor_class": "InternVLProcessor"}}


# transformers 5 writes InternVL with the older top-level names (language_model.model.*,
# language_model.lm_head, vision_tower.*); its in-memory names (model.*) are accepted too.
LAYOUT = Layout(
    "internvl", model_types=("internvl",), parse=_parse_internvl,
    renames=[
        (r"^model\.language_model\.", "language_model."),
        (r"^language_model\.model\.", "language_model."),
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^lm_head\.", "lm_head."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^vision_tower\.", "vision_tower."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^multi_modal_projector\.", "multi_modal_projector."),
    ],
    transforms=TEXT_TRANSFORMS,
    # written with the names transformers' own save_pretrained uses for InternVL
    export=[
        (r"^language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
        (r"^vision_tower\.", "vision_tower."),
        (r"^multi_modal_projector\.", "multi_modal_projector."),
    ],
    export_transforms=TEXT_EXPORT_TRANSFORMS,
    ignore=ROTARY_IGNORE,
    drop={r"^ts_(tower|projector)\.": "InternVL has no time-series tower"},
    write_config=_write_config,
    extra_files=_preprocessor_configs,
)
