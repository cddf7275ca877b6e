"""Legacy InternVL-chat checkpoints (model_type "internvl_chat": `llm_config` + an InternViT
`vision_config`, vision_model.* with a fused attn.qkv, the projector as mlp1.{0,1,3}): read
into the Intern-S1 module tree. Read only; OpenS1 writes the Intern-S1 or InternVL layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opens1.config import S1Config, VisionConfig
from opens1.models.checkpoint.configs import (OPENS1_KEY, check_image_path, check_text_model_type, need,
                                              parse_text_config, side)
from opens1.models.checkpoint.layout import ROTARY_IGNORE, Layout, Piece
from opens1.models.checkpoint.qwen3 import TEXT_TRANSFORMS


def _legacy_vision(vc: dict, d: dict) -> VisionConfig:
    """InternViT (intern_vit_6b) config -> VisionConfig, tiling from the chat config."""
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        need(vc, k, "vision_config")
    size = d.get("force_image_size") or vc.get("image_size") or 448
    return VisionConfig(
        hidden_size=vc["hidden_size"], num_hidden_layers=vc["num_hidden_layers"],
        num_attention_heads=vc["num_attention_heads"], intermediate_size=vc["intermediate_size"],
        image_size=side(size), patch_size=side(vc.get("patch_size", 14)), num_channels=vc.get("num_channels", 3),
        norm_type=vc.get("norm_type", "rms_norm"), layer_norm_eps=vc.get("layer_norm_eps", 1e-6),
        use_qk_norm=bool(vc.get("qk_normalization", False)), attention_bias=bool(vc.get("qkv_bias", False)),
        hidden_act=vc.get("hidden_act", "gelu"),
        min_tiles=d.get("min_dynamic_patch", 1),
        max_tiles=d.get("max_dynamic_patch", 12) if d.get("dynamic_image_size", True) else 1,
        use_thumbnail=bool(d.get("use_thumbnail", True)),
    )


def _parse_internvl_chat(d: dict) -> S1Config:
    """Legacy InternVL-chat config. The <IMG_CONTEXT> id is usually not in these configs;
    _post_parse reads it from the tokenizer files."""
    tc = need(d, "llm_config", "internvl_chat")
    vc = need(d, "vision_config", "internvl_chat")
    check_text_model_type(tc, "internvl_chat llm_config")
    check_image_path(d, vc, "internvl_chat")
    cfg = S1Config(text=parse_text_config(tc, "llm_config"), vision=_legacy_vision(vc, d), timeseries=None,
                   name=d.get("_name_or_path") or "internvl_chat", model_type="interns1")
    cfg.downsample_ratio = d.get("downsample_ratio", cfg.downsample_ratio)
    tok = d.get("image_token_id", d.get("img_context_token_id"))
    if tok is not None:
        cfg.image_token_id = int(tok)
    return cfg


def legacy_image_token_id(path: Path) -> int | None:
    """The id of <IMG_CONTEXT> from the tokenizer files next to a legacy checkpoint."""
    for name in ("added_tokens.json", "tokenizer_config.json", "tokenizer.json"):
        f = Path(path) / name
        if not f.is_file():
            continue
        data = json.loads(f.read_text())
        if name == "added_tokens.json" and "<IMG_CONTEXT>" in data:
            return int(data["<IMG_CONTEXT>"])
        if name == "tokenizer_config.json":
            for i, tok in (data.get("added_tokens_decoder") or {}).items():
                if tok.get("content") == "<IMG_CONTEXT>":
                    return int(i)
        if name == "tokenizer.json":
            for tok in data.get("added_tokens") or []:
                if tok.get("content") == "<IMG_CONTEXT>":
                    return int(tok["id"])
    return None


def _post_parse(cfg: S1Config, raw: dict, path: Path) -> None:
    if OPENS1_KEY in raw or raw.get("image_token_id", raw.get("img_context_token_id")) is not None:
        return
    tok = legacy_image_token_id(path)
    if tok is None:
        raise ValueError(f"legacy InternVL-chat checkpoint {path} has no <IMG_CONTEXT> id: no image_token_id in "
                         "config.json and no <IMG_CONTEXT> in added_tokens.json / tokenizer_config.json / tokenizer.json")
    cfg.image_token_id = tok


def _split_qkv(m: re.Match, cfg: S1Config) -> list[Piece]:
    """Legacy fused attn.qkv [3C, ...] -> q_proj, k_proj, v_proj (rows in q, k, v order)."""
    base, kind = m.group(1), m.group(2)
    c = cfg.vision.hidden_size
    return [Piece(f"{base}.{p}_proj.{kind}", None, (slice(i * c, (i + 1) * c),)) for i, p in enumerate("qkv")]


_LEGACY_LAYER = r"^vision_model\.encoder\.layers\.(\d+)\."
_OUR_LAYER = r"vision_tower.encoder.layer.\1."
LAYOUT = Layout(
    "internvl_chat", model_types=("internvl_chat",), parse=_parse_internvl_chat, post_parse=_post_parse,
    renames=[
        (r"^language_model\.model\.", "language_model."),
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^vision_model\.embeddings\.class_embedding$", "vision_tower.embeddings.cls_token"),
        (r"^vision_model\.embeddings\.position_embedding$", "vision_tower.embeddings.position_embeddings"),
        (r"^vision_model\.embeddings\.patch_embedding\.", "vision_tower.embeddings.patch_embeddings.projection."),
        (_LEGACY_LAYER + r"ls1$", _OUR_LAYER + "lambda_1"),
        (_LEGACY_LAYER + r"ls2$", _OUR_LAYER + "lambda_2"),
        (_LEGACY_LAYER + r"norm1\.", _OUR_LAYER + "layernorm_before."),
        (_LEGACY_LAYER + r"norm2\.", _OUR_LAYER + "layernorm_after."),
        (_LEGACY_LAYER + r"attn\.proj\.", _OUR_LAYER + "attention.projection_layer."),
        (_LEGACY_LAYER + r"attn\.(q_norm|k_norm|qkv)\.", _OUR_LAYER + r"attention.\2."),  # qkv: split below
        (_LEGACY_LAYER + r"mlp\.(fc1|fc2)\.", _OUR_LAYER + r"mlp.\2."),
        (r"^mlp1\.0\.", "multi_modal_projector.layer_norm."),
        (r"^mlp1\.1\.", "multi_modal_projector.linear_1."),
        (r"^mlp1\.3\.", "multi_modal_projector.linear_2."),
    ],
    transforms=[*TEXT_TRANSFORMS,
                (r"^(vision_tower\.encoder\.layer\.\d+\.attention)\.qkv\.(weight|bias)$", _split_qkv)],
    ignore=ROTARY_IGNORE,
)
