"""HF-format checkpoints in, Intern-S1-layout checkpoints out.

    load_model(path, dtype=None, device=None) -> S1ForConditionalGeneration
    save_pretrained(model, path)              (also `model.save_pretrained(path)`)

Layouts read (config.json `model_type` picks one, see LAYOUTS):
    qwen3 / qwen3_moe   Qwen3ForCausalLM, Qwen3MoeForCausalLM: model.*, lm_head.*
    interns1            InternS1ForConditionalGeneration: model.language_model.*, lm_head.*,
                        model.vision_tower.*, model.multi_modal_projector.*
    (OpenS1's own save is the interns1 layout plus our S1Config under "opens1_config")

How a checkpoint becomes a model (memory stays near one model size):
  1. parse config.json into an S1Config (both transformers-5 `rope_parameters` and older
     top-level `rope_theta`; `num_experts` or `num_local_experts`; a required value that
     is missing is an error, never a silent default);
  2. build the model on the meta device (no memory);
  3. PLAN from the safetensors headers only: every checkpoint key is renamed by its
     layout's (regex, replacement) list, then expanded by TRANSFORMS into pieces
     (destination parameter, slice of it, slice of the source). Missing, unexpected and
     mis-shaped tensors are all collected and raised as ONE ValueError;
  4. allocate each parameter on the target device and copy the pieces in, tensor by
     tensor (safetensors `safe_open`; FP8 block-quantised weights are dequantised on the
     way using their `weight_scale_inv`).

Extending (multimodal layouts, e.g. InternVL, legacy InternVL-chat): add a `Layout` to
LAYOUTS with its key renames (and export renames if it can be written), a config parser
in CONFIG_PARSERS keyed by model_type, and, for tensors that must be split or stacked
(fused qkv, per-expert weights), a `(regex, function)` entry in TRANSFORMS. Modules that
own non-persistent buffers must provide `_init_buffers()`: loading builds on the meta
device and calls it to recompute them on the target device.

Only safetensors are read; pickled files (*.bin, *.pt) are refused, never unpickled.
A checkpoint is untrusted input: the shard index may only name files inside the model
directory (relative paths without `..`; symlinks inside it, as the HF cache makes, are
followed), and a config is checked against CONFIG_LIMITS before anything is built.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

import torch

from opens1.config import S1Config, TextConfig, VisionConfig

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
OPENS1_KEY = "opens1_config"

# ====================================================================== config parsing


def _need(d: dict, key: str, where: str):
    if key not in d or d[key] is None:
        raise ValueError(f"config.json ({where}) has no {key!r}; refusing to guess it")
    return d[key]


# transformers' defaults of each config class (its __init__ / dataclass defaults), for the keys
# a config.json leaves out: diff-only serialisation omits every value equal to the default, and
# hand-written configs omit what their class fills in. tests/models/test_checkpoint_configs.py
# checks these tables against the installed transformers classes.
_QWEN3_COMMON = dict(
    vocab_size=151936, hidden_act="silu", max_position_embeddings=32768, initializer_range=0.02,
    rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False,
    use_sliding_window=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
HF_DEFAULTS: dict[str, dict] = {
    "qwen3": dict(_QWEN3_COMMON, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, head_dim=128),
    "qwen3_moe": dict(_QWEN3_COMMON, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                      num_attention_heads=32, num_key_value_heads=4, num_experts=128, num_experts_per_tok=8,
                      moe_intermediate_size=768, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
                      router_aux_loss_coef=0.001),  # head_dim: hidden_size // num_attention_heads
    "interns1_vision": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, attention_bias=False, use_qk_norm=False,
        intermediate_size=4096, hidden_act="gelu", initializer_range=0.02, norm_type="layer_norm",
        layer_norm_eps=1e-6, image_size=[448, 448], patch_size=[14, 14], num_channels=3, use_mask_token=False,
        use_absolute_position_embeddings=True, layer_scale_init_value=0.1, use_mean_pooling=True),
    "interns1": dict(image_token_id=151667, image_seq_length=256, downsample_ratio=0.5, projector_hidden_act="gelu",
                     vision_feature_layer=-1, vision_feature_select_strategy="default"),
}  # fmt: skip
HF_DEFAULTS["internvl_vision"] = dict(HF_DEFAULTS["interns1_vision"])
HF_DEFAULTS["internvl"] = dict(HF_DEFAULTS["interns1"], tie_word_embeddings=True)


def with_defaults(d: dict, model_type: str) -> dict:
    """`d` with transformers' defaults of `model_type` for the keys it lacks."""
    return {**HF_DEFAULTS[model_type], **d}


def parse_text_config(d: dict, where: str = "text config") -> TextConfig:
    """HF Qwen3 / Qwen3-MoE config dict -> TextConfig.

    Keys the dict lacks take transformers' defaults of its class (HF_DEFAULTS; model_type
    "qwen3_moe" when it says so or lists experts, else "qwen3"), as transformers reads
    diff-serialised configs. rope_theta is read from `rope_parameters` (transformers 5), the
    top level (transformers 4) or `rope_scaling`; num_experts or num_local_experts;
    num_key_value_heads: None means num_attention_heads; Qwen3-MoE's head_dim defaults to
    hidden_size // num_attention_heads."""
    mt = d.get("model_type")
    if mt is None:
        mt = "qwen3_moe" if (d.get("num_experts") or d.get("num_local_experts")) else "qwen3"
    if mt not in ("qwen3", "qwen3_moe"):
        raise ValueError(f"config.json ({where}): text model_type {mt!r} is not supported (only qwen3 / qwen3_moe)")
    if "num_local_experts" in d and "num_experts" not in d:
        d = {**d, "num_experts": d["num_local_experts"]}
    if "num_key_value_heads" in d and d["num_key_value_heads"] is None:
        d = {**d, "num_key_value_heads": d.get("num_attention_heads", HF_DEFAULTS[mt]["num_attention_heads"])}
    rp = d.get("rope_parameters") or {}
    rs_old = d.get("rope_scaling") or {}
    theta = rp.get("rope_theta", d.get("rope_theta", rs_old.get("rope_theta")))
    d = with_defaults(d, mt)
    if theta is None:
        theta = d["rope_theta"]
    if d.get("head_dim") is None:
        d["head_dim"] = d["hidden_size"] // d["num_attention_heads"]
    scaling = {k: v for k, v in (rp or rs_old).items() if k != "rope_theta"}
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if scaling.get("rope_type", "default") == "default":
        scaling = None
    n_experts = d.get("num_experts", 0) if mt == "qwen3_moe" else 0
    t = TextConfig(
        vocab_size=_need(d, "vocab_size", where),
        hidden_size=_need(d, "hidden_size", where),
        intermediate_size=_need(d, "intermediate_size", where),
        num_hidden_layers=_need(d, "num_hidden_layers", where),
        num_attention_heads=_need(d, "num_attention_heads", where),
        num_key_value_heads=_need(d, "num_key_value_heads", where),
        head_dim=_need(d, "head_dim", where),
        rms_norm_eps=_need(d, "rms_norm_eps", where),
        rope_theta=float(theta),
        rope_scaling=scaling,
        max_position_embeddings=_need(d, "max_position_embeddings", where),
        tie_word_embeddings=bool(d["tie_word_embeddings"]),
        attention_bias=bool(d["attention_bias"]),
        num_experts=int(n_experts or 0),
        bos_token_id=d["bos_token_id"],
        eos_token_id=d["eos_token_id"],
        pad_token_id=d["pad_token_id"],
        initializer_range=d["initializer_range"],
    )
    if t.num_experts:
        t.num_experts_per_tok = _need(d, "num_experts_per_tok", where)
        t.moe_intermediate_size = _need(d, "moe_intermediate_size", where)
        t.norm_topk_prob = bool(d["norm_topk_prob"])
        t.decoder_sparse_step = d["decoder_sparse_step"]
        t.mlp_only_layers = list(d["mlp_only_layers"] or [])
        t.router_aux_loss_coef = d["router_aux_loss_coef"]
    if d["hidden_act"] != "silu":
        raise ValueError(f"config.json ({where}): hidden_act {d['hidden_act']!r} is not supported (Qwen3 uses silu)")
    if d["use_sliding_window"]:
        raise ValueError(f"config.json ({where}): use_sliding_window=true is not supported (full attention only)")
    if float((scaling or {}).get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"config.json ({where}): partial_rotary_factor != 1 is not supported")
    return t


def text_config_to_hf(t: TextConfig) -> dict:
    """TextConfig -> a Qwen3 / Qwen3-MoE config dict (readable by transformers 4.x and 5.x)."""
    rope = {"rope_type": "default", **(t.rope_scaling or {}), "rope_theta": t.rope_theta}
    d = {
        "model_type": "qwen3_moe" if t.is_moe else "qwen3",
        "architectures": ["Qwen3MoeForCausalLM" if t.is_moe else "Qwen3ForCausalLM"],
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads, "head_dim": t.head_dim, "hidden_act": "silu",
        "rms_norm_eps": t.rms_norm_eps, "rope_theta": t.rope_theta, "rope_parameters": rope,
        "max_position_embeddings": t.max_position_embeddings, "tie_word_embeddings": t.tie_word_embeddings,
        "attention_bias": t.attention_bias, "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id,
        "pad_token_id": t.pad_token_id, "initializer_range": t.initializer_range,
    }
    if t.rope_scaling:
        d["rope_scaling"] = dict(t.rope_scaling)
    if t.is_moe:
        d.update(num_experts=t.num_experts, num_experts_per_tok=t.num_experts_per_tok,
                 moe_intermediate_size=t.moe_intermediate_size, norm_topk_prob=t.norm_topk_prob,
                 decoder_sparse_step=t.decoder_sparse_step, mlp_only_layers=list(t.mlp_only_layers),
                 router_aux_loss_coef=t.router_aux_loss_coef, output_router_logits=False)
    return d


def _side(x):
    return int(x[0]) if isinstance(x, (list, tuple)) else int(x)


def parse_vision_config(d: dict, model_type: str = "interns1_vision") -> VisionConfig:
    """HF InternS1VisionConfig / InternVLVisionConfig dict -> VisionConfig (names map one to
    one; missing keys take the class's defaults, e.g. attention_bias=False). Image tiling
    (min/max tiles, thumbnail) is not part of these configs: VisionConfig's defaults."""
    d = with_defaults({k: v for k, v in d.items() if v is not None}, model_type)
    known = {f for f in VisionConfig.__dataclass_fields__}
    v = {k: d[k] for k in known if k in d}
    for k in ("image_size", "patch_size"):
        v[k] = _side(v[k])
    return VisionConfig(**v)


_TILING = ("min_tiles", "max_tiles", "use_thumbnail")  # preprocessor settings, not vision-config keys


def vision_config_to_hf(v: VisionConfig, model_type: str = "interns1_vision") -> dict:
    d = {k: getattr(v, k) for k in VisionConfig.__dataclass_fields__ if k not in _TILING}
    d.update(model_type=model_type, image_size=[v.image_size] * 2, patch_size=[v.patch_size] * 2,
             use_mean_pooling=True, use_absolute_position_embeddings=True, use_mask_token=False)
    return d


def _parse_qwen3(d: dict) -> S1Config:
    return S1Config(text=parse_text_config(d, "top level"), vision=None, timeseries=None,
                    name=d.get("_name_or_path") or d["model_type"])


def _parse_interns1(d: dict) -> S1Config:
    """transformers' InternS1Config, with its defaults for missing keys (a vision_config that
    lists nothing is the default InternS1VisionConfig, a missing text_config the default
    Qwen3Config). No vision_config at all is a text-only model (how OpenS1 saves those)."""
    d = with_defaults(d, "interns1")
    tc = d.get("text_config") or {"model_type": "qwen3"}
    vc = d.get("vision_config")
    if vc is not None:
        _check_image_path(d, with_defaults(vc, "interns1_vision"), "interns1")
    cfg = S1Config(text=parse_text_config(tc, "text_config"),
                   vision=parse_vision_config(vc, "interns1_vision") if vc is not None else None,
                   timeseries=None, name=d.get("_name_or_path") or "interns1")
    cfg.image_token_id = int(d["image_token_id"])
    cfg.downsample_ratio = d["downsample_ratio"]
    cfg.projector_hidden_act = d["projector_hidden_act"]
    return cfg


GENERATION_CONFIG = "generation_config.json"
# generation_config.json keys that set sampling, as OpenAI-style parameters (vLLM reads the same)
_SAMPLING_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                  "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


def read_generation_config(path) -> dict:
    """A checkpoint directory's generation_config.json as a dict ({} when there is none);
    eos_token_id is always a list."""
    f = Path(path) / GENERATION_CONFIG
    if not f.is_file():
        return {}
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{f}: expected a JSON object")
    eos = d.get("eos_token_id")
    if eos is not None:
        d["eos_token_id"] = [int(eos)] if isinstance(eos, int) else [int(x) for x in eos]
    return d


def generation_defaults(path) -> dict:
    """The default sampling a server should use for a checkpoint: the sampling keys its
    generation_config.json sets (max_new_tokens as max_tokens) and its stop ids. An explicit
    `do_sample: false` means greedy (temperature 0), as transformers generates."""
    d = read_generation_config(path)
    out = {ours: d[hf] for hf, ours in _SAMPLING_KEYS.items() if d.get(hf) is not None}
    if d.get("do_sample") is False:
        out["temperature"] = 0.0
    if d.get("eos_token_id"):
        out["eos_token_id"] = d["eos_token_id"]
    return out


# model_type -> (layout name, parser). Add multimodal layouts here.
CONFIG_PARSERS: dict[str, tuple[str, Callable[[dict], S1Config]]] = {
    "qwen3": ("qwen3", _parse_qwen3),
    "qwen3_moe": ("qwen3", _parse_qwen3),
    "interns1": ("interns1", _parse_interns1),
}


def parse_config(d: dict) -> tuple[S1Config, str]:
    """config.json dict -> (S1Config, layout name); sizes past CONFIG_LIMITS are a ValueError."""
    mt = d.get("model_type")
    if mt not in CONFIG_PARSERS:
        raise ValueError(f"unsupported model_type {mt!r}; known: {', '.join(CONFIG_PARSERS)}")
    layout, parser = CONFIG_PARSERS[mt]
    if OPENS1_KEY in d:  # our own save: exact round trip
        cfg = S1Config.from_dict(d[OPENS1_KEY])
    else:
        cfg = parser(d)
    check_config_limits(cfg)
    return cfg, layout


# Sizes far past any real checkpoint (Llama-3 405B: 126 layers, width 16,384, FFN 53,248;
# DeepSeek-V3: 256 experts; Gemma 3: a 262k vocabulary; Intern-S1: 94 layers, 128 experts),
# checked before the model is built: a config.json with a million layers spent minutes
# building modules on the meta device before the shape check could say anything.
CONFIG_LIMITS: dict[str, dict[str, int]] = {
    "text": {
        "vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 18, "moe_intermediate_size": 1 << 18,
        "num_hidden_layers": 1024, "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 4096,
        "num_experts": 4096, "num_experts_per_tok": 4096, "max_position_embeddings": 1 << 24,
    },
    "vision": {
        "hidden_size": 1 << 16, "intermediate_size": 1 << 18, "num_hidden_layers": 1024, "num_attention_heads": 1024,
        "image_size": 8192, "patch_size": 8192, "num_channels": 16, "max_tiles": 256,
    },
    "timeseries": {
        "patch_dim": 1 << 16, "patch_heads": 1024, "patch_ffn_dim": 1 << 18, "embed_dim": 1 << 16,
        "num_mel_bins": 1 << 16, "d_model": 1 << 16, "encoder_layers": 1024, "encoder_attention_heads": 1024,
        "encoder_ffn_dim": 1 << 18, "max_source_positions": 1 << 20, "output_dim": 1 << 16, "patch_max_len": 1 << 20,
    },
}


def check_config_limits(cfg: S1Config) -> None:
    """A ValueError naming the field and its limit for any size outside 0..CONFIG_LIMITS."""
    for part, limits in CONFIG_LIMITS.items():
        sub = getattr(cfg, part, None)
        if sub is None:
            continue
        for name, limit in limits.items():
            v = getattr(sub, name, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 <= v <= limit:
                raise ValueError(
                    f"config.json: {part}.{name} = {v:,} is outside 0..{limit:,}; refusing to build the model "
                    f"(the limit is a sanity bound far above any real checkpoint: opens1.models.checkpoint.CONFIG_LIMITS)"
                )


# ====================================================================== layouts (key renames)


@dataclass
class Layout:
    """Key renames between a checkpoint layout and our module names. Rules are tried
    in order and the first match wins; a key no rule matches is 'unexpected'."""

    name: str
    renames: list[tuple[str, str]]  # (regex on checkpoint key, replacement) -> our name
    export: list[tuple[str, str]] = field(default_factory=list)  # (regex on our name, replacement)
    ignore: list[str] = field(default_factory=list)  # checkpoint keys to skip silently (regexes)
    drop: dict[str, str] = field(default_factory=dict)  # regex on our names not written -> why

    def to_ours(self, key: str) -> str | None:
        for pat, rep in self.renames:
            new, n = re.subn(pat, rep, key, count=1)
            if n:
                return new
        return None

    def to_ckpt(self, name: str) -> str:
        for pat, rep in self.export:
            new, n = re.subn(pat, rep, name, count=1)
            if n:
                return new
        raise ValueError(f"layout {self.name!r} has no export rule for parameter {name!r}")


_ROTARY_IGNORE = [r"(^|\.)rotary_emb\.inv_freq$"]

LAYOUTS: dict[str, Layout] = {
    "qwen3": Layout("qwen3", renames=[(r"^model\.", "language_model."), (r"^lm_head\.", "lm_head.")],
                    ignore=_ROTARY_IGNORE),
    "interns1": Layout(
        "interns1",
        renames=[
            (r"^model\.language_model\.", "language_model."),
            (r"^lm_head\.", "lm_head."),
            (r"^model\.vision_tower\.", "vision_tower."),
            (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
            (r"^model\.ts_tower\.", "ts_tower."),
            (r"^model\.ts_projector\.", "ts_projector."),
        ],
        export=[
            (r"^language_model\.", "model.language_model."),
            (r"^lm_head\.", "lm_head."),
            (r"^vision_tower\.", "model.vision_tower."),
            (r"^multi_modal_projector\.", "model.multi_modal_projector."),
            (r"^ts_tower\.", "model.ts_tower."),
            (r"^ts_projector\.", "model.ts_projector."),
        ],
        ignore=_ROTARY_IGNORE,
    ),
}


# ====================================================================== tensor transforms


@dataclass
class Piece:
    """Copy source[src_index] into param `dest`[dest_index] (None = the whole tensor)."""

    dest: str
    dest_index: tuple | None = None
    src_index: tuple | None = None


def _expert_piece(m: re.Match, cfg: S1Config) -> list[Piece]:
    base, e, which = m.group(1), int(m.group(2)), m.group(3)
    inter = cfg.text.moe_intermediate_size
    if which == "gate":
        return [Piece(f"{base}.gate_up_proj", (e, slice(0, inter)))]
    if which == "up":
        return [Piece(f"{base}.gate_up_proj", (e, slice(inter, 2 * inter)))]
    return [Piece(f"{base}.down_proj", (e,))]


def _qkv_rows(cfg: S1Config) -> dict[str, slice]:
    t = cfg.text
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    return {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}


def _qkv_piece(m: re.Match, cfg: S1Config) -> list[Piece]:
    # HF q_proj / k_proj / v_proj -> row blocks of our fused qkv_proj
    return [Piece(f"{m.group(1)}.qkv_proj.{m.group(3)}", (_qkv_rows(cfg)[m.group(2)],))]


def _gate_up_piece(m: re.Match, cfg: S1Config) -> list[Piece]:
    # dense SwiGLU: HF gate_proj / up_proj -> halves of our fused gate_up_proj
    inter = cfg.text.intermediate_size
    rows = slice(0, inter) if m.group(2) == "gate" else slice(inter, 2 * inter)
    return [Piece(f"{m.group(1)}.gate_up_proj.weight", (rows,))]


# (regex on our renamed key, fn(match, cfg) -> pieces). First match wins; no match = one whole piece.
TRANSFORMS: list[tuple[str, Callable[[re.Match, S1Config], list[Piece]]]] = [
    (r"^(language_model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", _expert_piece),
    (r"^(language_model\.layers\.\d+\.self_attn)\.(q|k|v)_proj\.(weight|bias)$", _qkv_piece),
    (r"^(language_model\.layers\.\d+\.mlp)\.(gate|up)_proj\.weight$", _gate_up_piece),
]


def _pieces(name: str, cfg: S1Config) -> list[Piece]:
    for pat, fn in TRANSFORMS:
        m = re.match(pat, name)
        if m:
            return fn(m, cfg)
    return [Piece(name)]


# (regex on our name, fn(name, tensor, cfg) -> [(our-style name, tensor)]) used when saving
def _export_experts(name: str, w: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
    base, kind = name.rsplit(".", 1)
    out = []
    for e in range(w.shape[0]):
        if kind == "gate_up_proj":
            gate, up = w[e].chunk(2, dim=0)
            out += [(f"{base}.{e}.gate_proj.weight", gate), (f"{base}.{e}.up_proj.weight", up)]
        else:
            out.append((f"{base}.{e}.down_proj.weight", w[e]))
    return out


def _export_qkv(name: str, w: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
    base, kind = name.rsplit(".qkv_proj.", 1)
    return [(f"{base}.{p}_proj.{kind}", w[rows]) for p, rows in _qkv_rows(cfg).items()]


def _export_gate_up(name: str, w: torch.Tensor, cfg: S1Config) -> list[tuple[str, torch.Tensor]]:
    base = name.rsplit(".gate_up_proj.", 1)[0]
    gate, up = w.chunk(2, dim=0)
    return [(f"{base}.gate_proj.weight", gate), (f"{base}.up_proj.weight", up)]


EXPORT_TRANSFORMS: list[tuple[str, Callable]] = [
    (r"^language_model\..*\.mlp\.experts\.(gate_up_proj|down_proj)$", _export_experts),
    (r"^language_model\..*\.self_attn\.qkv_proj\.(weight|bias)$", _export_qkv),
    (r"^language_model\..*\.mlp\.gate_up_proj\.weight$", _export_gate_up),
]


def convert_state_dict(sd: dict[str, torch.Tensor], cfg: S1Config, layout: str = "qwen3") -> dict[str, torch.Tensor]:
    """An in-memory checkpoint state dict (HF names, e.g. transformers' `model.state_dict()`)
    -> our parameter names (fused qkv / gate_up, stacked experts). Tensors not fully
    covered raise a ValueError, as loading does."""
    lay = LAYOUTS[layout]
    out: dict[str, torch.Tensor] = {}
    shapes = {k: tuple(v.shape) for k, v in _meta_model(cfg).state_dict().items()}
    for key, t in sd.items():
        if any(re.search(p, key) for p in lay.ignore):
            continue
        name = lay.to_ours(key)
        if name is None:
            raise ValueError(f"no rule of layout {layout!r} maps key {key!r}")
        for p in _pieces(name, cfg):
            if p.dest not in shapes:
                raise ValueError(f"{key} maps to {p.dest}, which the model does not have")
            if p.dest_index is None:
                out[p.dest] = t if p.src_index is None else t[p.src_index]
                continue
            if p.dest not in out:
                out[p.dest] = torch.full(shapes[p.dest], float("nan"), dtype=t.dtype, device=t.device)
            out[p.dest][p.dest_index] = t if p.src_index is None else t[p.src_index]
    if cfg.text.tie_word_embeddings:
        out.pop("lm_head.weight", None)
        out["lm_head.weight"] = out["language_model.embed_tokens.weight"]
    return out


def export_state_dict(model, layout: str = "interns1") -> dict[str, torch.Tensor]:
    """Our model -> a state dict with the layout's checkpoint names (HF q/k/v, per-expert keys)."""
    return dict(_export_tensors(model, LAYOUTS[layout]))


def _meta_model(cfg: S1Config):
    from opens1.models.s1 import S1ForConditionalGeneration

    with torch.device("meta"):
        return S1ForConditionalGeneration(cfg)


# ====================================================================== reading safetensors


class TensorSource:
    """All tensors of a checkpoint directory (one file, or shards + index), read lazily."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._open = safe_open
        index, single = path / INDEX_NAME, path / SINGLE_NAME
        if index.is_file():
            files = sorted(set(_index_shards(index)))
        elif single.is_file():
            files = [SINGLE_NAME]
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
        if not files:
            pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
            hint = f" (found {pickled}: pickled weights are never loaded; convert them to safetensors)" if pickled else ""
            raise FileNotFoundError(f"no *.safetensors weights in {path}{hint}")
        self.path, self.files = path, files
        self._handles: dict[str, object] = {}
        self.file_of: dict[str, str] = {}
        self.meta: dict[str, tuple[tuple[int, ...], str]] = {}  # key -> (shape, safetensors dtype)
        for f in files:
            if not (path / f).is_file():
                raise FileNotFoundError(f"shard {f} named in {INDEX_NAME} is missing from {path}")
            h = self._handle(f)
            for k in h.keys():
                s = h.get_slice(k)
                self.file_of[k] = f
                self.meta[k] = (tuple(s.get_shape()), s.get_dtype())

    def _handle(self, f: str):
        if f not in self._handles:  # f: a name checked by _index_shards, or one found by glob
            self._handles[f] = self._open(str(self.path / f), framework="pt", device="cpu")
        return self._handles[f]

    def get(self, key: str) -> torch.Tensor:
        return self._handle(self.file_of[key]).get_tensor(key)


def _index_shards(index: Path) -> list[str]:
    """The shard file names of a safetensors index, each a relative path inside the model
    directory: an absolute path, `..`, or anything but a string is a ValueError."""
    try:
        wm = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index} is not a safetensors index with a weight_map: {e}") from None
    if not isinstance(wm, dict):
        raise ValueError(f"{index}: weight_map must map tensor names to shard files")
    for key, name in wm.items():
        inside = (isinstance(name, str) and name and "\\" not in name and "\0" not in name
                  and not PurePosixPath(name).is_absolute() and not PureWindowsPath(name).drive
                  and ".." not in PurePosixPath(name).parts)
        if not inside:
            raise ValueError(
                f"{index}: tensor {key!r} is in shard {name!r}, which is not a file inside the model directory; "
                "shard names must be relative paths without '..'"
            )
    return list(wm.values())


# FP8 ---------------------------------------------------------------------------------

_SCALE_SUFFIXES = ("_scale_inv", "_scale")
_FP8_DTYPES = ("F8_E4M3", "F8_E5M2")


def _scale_key(src: TensorSource, key: str) -> str | None:
    for suf in _SCALE_SUFFIXES:
        if key + suf in src.meta:
            return key + suf
    return None


def dequantize_fp8(w: torch.Tensor, scale: torch.Tensor, block: list[int] | None = None) -> torch.Tensor:
    """Block-wise FP8 dequantisation (DeepSeek-V3 / Qwen3-FP8 format): each
    block[0] x block[1] tile of w is multiplied by its entry of `scale`
    ([ceil(out/b0), ceil(in/b1)]); per-tensor and per-row scales work too."""
    w32 = w.to(torch.float32)
    s = scale.to(torch.float32)
    if s.numel() == 1:
        return w32 * s.reshape(())
    if w32.dim() != s.dim():
        raise ValueError(f"FP8 scale shape {tuple(s.shape)} does not fit weight shape {tuple(w32.shape)}")
    for dim in range(w32.dim()):
        b = (block[dim] if block and dim < len(block) else None) or math.ceil(w32.shape[dim] / s.shape[dim])
        if math.ceil(w32.shape[dim] / b) != s.shape[dim]:
            raise ValueError(f"FP8 scale shape {tuple(s.shape)} does not fit weight {tuple(w32.shape)} in blocks {block}")
        s = s.repeat_interleave(b, dim=dim).narrow(dim, 0, w32.shape[dim])
    return w32 * s


# ====================================================================== load


def _default_device_dtype(dtype, device):
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return dtype, device


def _target_tensors(model) -> dict[str, torch.Tensor]:
    """Parameters (tied ones once) and persistent buffers, by name."""
    out = dict(model.named_parameters())
    persistent = {k for k in model.state_dict()}
    out.update({k: b for k, b in model.named_buffers() if k in persistent})
    return out


def _plan(model, src: TensorSource, layout: Layout, cfg: S1Config):
    """Map every checkpoint tensor onto our parameters using headers only.
    Returns [(ckpt key, [Piece])]; raises one ValueError listing every problem."""
    targets = _target_tensors(model)
    covered = {name: 0 for name in targets}
    plan, unexpected, misshaped = [], [], []
    scale_keys = {_scale_key(src, k) for k in src.meta} - {None}
    tied = cfg.text.tie_word_embeddings
    for key, (shape, _) in src.meta.items():
        if key in scale_keys or key.endswith(("input_scale", "activation_scale")):
            continue  # consumed with its weight (FP8)
        if any(re.search(p, key) for p in layout.ignore):
            continue
        name = layout.to_ours(key)
        if name == "lm_head.weight" and tied:
            continue  # tied head: the embedding is the head
        pieces = _pieces(name, cfg) if name is not None else []
        if not pieces or any(p.dest not in targets for p in pieces):
            unexpected.append(key)
            continue
        meta_src = torch.empty(shape, device="meta")
        for p in pieces:
            want = targets[p.dest] if p.dest_index is None else targets[p.dest][p.dest_index]
            have = meta_src if p.src_index is None else meta_src[p.src_index]
            if tuple(want.shape) != tuple(have.shape):
                misshaped.append(f"{key} {tuple(have.shape)} -> {p.dest} expects {tuple(want.shape)}")
            else:
                covered[p.dest] += want.numel()
        plan.append((key, pieces))
    missing = [f"{n} ({c}/{targets[n].numel()} elements)" if c else n
               for n, c in covered.items() if c != targets[n].numel()]
    if missing or unexpected or misshaped:
        def listing(title, items):
            if not items:
                return ""
            shown = "\n    ".join(items[:25]) + (f"\n    ... and {len(items) - 25} more" if len(items) > 25 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}"

        raise ValueError(
            f"checkpoint {src.path} does not match the model built from its config (layout {layout.name!r}):"
            + listing("missing from the checkpoint", missing)
            + listing("unexpected in the checkpoint", unexpected)
            + listing("wrong shape", misshaped))
    return plan


def _materialise(model, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Replace meta parameters/buffers by uninitialised tensors on `device`, keeping ties.
    Persistent buffers are then loaded like parameters; non-persistent ones must be
    recomputed by their module's `_init_buffers()`."""
    made: dict[int, torch.nn.Parameter] = {}
    orphans = []
    for mname, mod in model.named_modules():
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            if id(p) not in made:
                dt = dtype if p.is_floating_point() else p.dtype
                made[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=dt, device=device), p.requires_grad)
            mod._parameters[pname] = made[id(p)]
        for bname, b in list(mod._buffers.items()):
            if b is None:
                continue
            if bname in mod._non_persistent_buffers_set and not hasattr(mod, "_init_buffers"):
                orphans.append(f"{mname}.{bname}")
            dt = dtype if b.is_floating_point() else b.dtype
            mod._buffers[bname] = torch.empty(b.shape, dtype=dt, device=device)
    if orphans:
        raise RuntimeError(f"non-persistent buffers cannot be loaded; their modules need _init_buffers(): {orphans}")
    return _target_tensors(model)


def load_model(path, dtype=None, device=None):
    """Load an HF-format checkpoint directory (see module docstring) lazily and shard by
    shard. dtype None: float32 on CPU, bfloat16 on CUDA. Returns the model in eval mode."""
    from opens1.models.s1 import S1ForConditionalGeneration

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    raw = json.loads(cfg_file.read_text())
    cfg, layout_name = parse_config(raw)
    if layout_name == "internvl_chat":  # helper B: <IMG_CONTEXT> id lives in the tokenizer files
        _legacy_post_parse(cfg, raw, path)
    layout = LAYOUTS[layout_name]
    qcfg = raw.get("quantization_config") or (raw.get("text_config") or {}).get("quantization_config") or {}
    block = qcfg.get("weight_block_size")
    dtype, device = _default_device_dtype(dtype, device)
    src = TensorSource(path)

    with torch.device("meta"):
        model = S1ForConditionalGeneration(cfg)
    plan = _plan(model, src, layout, cfg)
    targets = _materialise(model, dtype, device)
    with torch.no_grad():
        for key, pieces in sorted(plan, key=lambda kp: src.file_of[kp[0]]):  # shard by shard
            t = src.get(key)
            if src.meta[key][1] in _FP8_DTYPES:
                sk = _scale_key(src, key)
                if sk is None:
                    raise ValueError(f"FP8 tensor {key} has no {key}_scale_inv next to it")
                t = dequantize_fp8(t, src.get(sk), block)
            for p in pieces:
                dst = targets[p.dest] if p.dest_index is None else targets[p.dest][p.dest_index]
                dst.copy_(t if p.src_index is None else t[p.src_index])
            del t
    for mod in model.modules():  # recompute non-persistent buffers on the target device
        if hasattr(mod, "_init_buffers"):
            mod._init_buffers()
    from opens1.infer.generate import tokenizer_size

    model.vocab_limit = tokenizer_size(path)  # generate() never samples ids this tokenizer lacks
    return model.eval()


# ====================================================================== save


def _parse_size(s: int | str) -> int:
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", s.upper())
    if not m:
        raise ValueError(f"bad shard size {s!r} (use e.g. '4GB', '500MB' or bytes)")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)])


def _export_tensors(model, layout: Layout, dropped: list[str] | None = None):
    """Yield (checkpoint key, tensor) in our module order; names the layout cannot hold are
    appended to `dropped` instead (see Layout.drop)."""
    cfg = model.config
    for name, t in model.state_dict().items():
        if cfg.text.tie_word_embeddings and name == "lm_head.weight":
            continue  # tied: written once, as the embedding
        if any(re.match(p, name) for p in layout.drop):
            if dropped is not None:
                dropped.append(name)
            continue
        t = t.detach()
        items = [(name, t)]
        for pat, fn in EXPORT_TRANSFORMS:
            if re.match(pat, name):
                items = fn(name, t, cfg)
                break
        for n, x in items:
            yield layout.to_ckpt(n), x.contiguous()


def hf_config(model_cfg: S1Config, dtype: torch.dtype, layout: str = "interns1") -> dict:
    """The config.json we write, plus our own S1Config (under "opens1_config") for an exact
    round trip. layout "interns1": Intern-S1's InternS1Config; "internvl": transformers'
    InternVLConfig (InternVLForConditionalGeneration), which has no time-series tower."""
    if layout == "internvl":
        if model_cfg.vision is None:
            raise ValueError("the internvl layout needs a vision tower; this model is text-only")
        ours = model_cfg.replace(timeseries=None)
        text = dict(text_config_to_hf(model_cfg.text), tie_word_embeddings=model_cfg.text.tie_word_embeddings)
        return {
            "architectures": ["InternVLForConditionalGeneration"],
            "model_type": "internvl",
            "text_config": text,
            "vision_config": vision_config_to_hf(model_cfg.vision, "internvl_vision"),
            "image_token_id": model_cfg.image_token_id,
            "image_seq_length": model_cfg.image_tokens_per_tile,
            "downsample_ratio": model_cfg.downsample_ratio,
            "projector_hidden_act": model_cfg.projector_hidden_act,
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default",
            "tie_word_embeddings": model_cfg.text.tie_word_embeddings,
            "dtype": str(dtype).removeprefix("torch."),
            OPENS1_KEY: ours.to_dict(),
        }
    if layout != "interns1":
        raise ValueError(f"cannot write layout {layout!r}; writable: interns1, internvl")
    d = {
        "architectures": ["InternS1ForConditionalGeneration"],
        "model_type": "interns1",
        "text_config": text_config_to_hf(model_cfg.text),
        "image_token_id": model_cfg.image_token_id,
        "downsample_ratio": model_cfg.downsample_ratio,
        "projector_hidden_act": model_cfg.projector_hidden_act,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": model_cfg.text.tie_word_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
        OPENS1_KEY: model_cfg.to_dict(),
    }
    if model_cfg.vision is not None:
        d["vision_config"] = vision_config_to_hf(model_cfg.vision)
    return d


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_pretrained(model, path, max_shard_size: int | str = "4GB", layout: str = "interns1") -> list[str]:
    """Write sharded safetensors (model-0000i-of-0000n.safetensors) + index + config.json in
    `layout` (interns1 or internvl). Returns the parameters the layout cannot hold (left out)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    limit = _parse_size(max_shard_size)
    if layout not in ("interns1", "internvl"):
        raise ValueError(f"cannot write layout {layout!r}; writable: interns1, internvl")
    lay = LAYOUTS[layout]
    conf = hf_config(model.config, model.dtype, layout)  # before writing: refuses what the layout cannot hold
    dropped: list[str] = []
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in _export_tensors(model, lay, dropped):
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = t.cpu()
        size += nbytes
    n = len(shards)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        _atomic_write(path / fname, lambda tmp, s=shard: save_file(s, tmp, metadata={"format": "pt"}))
        for k, t in shard.items():
            weight_map[k] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _atomic_write(path / INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2)))
    _atomic_write(path / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(conf, indent=2)))
    # a stale single-file checkpoint from an earlier save would shadow nothing (the index
    # wins) but would confuse readers; remove it and shards of a larger earlier save
    for old in path.glob("model*.safetensors"):
        if old.name not in weight_map.values():
            old.unlink()
    return dropped


# ====================================================================== multimodal layouts (helper B)
# InternVL as transformers writes it (model_type "internvl") and legacy InternVL-chat
# ("internvl_chat": vision_model.* with a fused qkv, mlp1.{0,1,3}). Both are read into the
# Intern-S1 module tree; saving always writes the Intern-S1 layout. Registered into the
# tables above (CONFIG_PARSERS, LAYOUTS, TRANSFORMS) at import.

def _check_image_path(d: dict, vc: dict, where: str) -> None:
    """Refuse configs whose image path differs from the one implemented (last layer, CLS
    dropped, no final vision norm, pixel shuffle v2, GELU projector)."""
    problems = []
    if d.get("vision_feature_layer", d.get("select_layer", -1)) != -1:
        problems.append(f"vision_feature_layer {d.get('vision_feature_layer', d.get('select_layer'))} (only -1)")
    if d.get("vision_feature_select_strategy", "default") != "default":
        problems.append(f"vision_feature_select_strategy {d['vision_feature_select_strategy']!r} (only 'default')")
    if d.get("ps_version", "v2") != "v2":
        problems.append(f"ps_version {d['ps_version']!r} (only InternVL's 'v2' pixel shuffle)")
    if d.get("projector_hidden_act", "gelu") != "gelu":
        problems.append(f"projector_hidden_act {d['projector_hidden_act']!r} (only 'gelu')")
    if vc.get("use_mean_pooling", True) is False:
        problems.append("vision use_mean_pooling=false (a final vision LayerNorm is not implemented)")
    if vc.get("use_absolute_position_embeddings", True) is False:
        problems.append("vision use_absolute_position_embeddings=false")
    if problems:
        raise ValueError(f"config.json ({where}) uses an unsupported image path: " + "; ".join(problems))


def _text_model_type_ok(tc: dict, where: str) -> None:
    mt = tc.get("model_type")
    if mt not in (None, "qwen3", "qwen3_moe"):
        raise ValueError(f"config.json ({where}): text model_type {mt!r} is not supported (only qwen3 / qwen3_moe)")


def _parse_internvl(d: dict) -> S1Config:
    """transformers' InternVLConfig, with its defaults for missing keys. Tying follows
    transformers 5: the top-level tie_word_embeddings (default True) wins over the text
    config's. The text config is required (InternVL's default text model, Qwen2, is not
    supported)."""
    d = with_defaults(d, "internvl")
    tc = dict(_need(d, "text_config", "internvl"))
    vc = with_defaults(d.get("vision_config") or {}, "internvl_vision")
    _text_model_type_ok(tc, "internvl text_config")
    _check_image_path(d, vc, "internvl")
    tc["tie_word_embeddings"] = d["tie_word_embeddings"]
    cfg = S1Config(text=parse_text_config(tc, "text_config"), vision=parse_vision_config(vc, "internvl_vision"),
                   timeseries=None, name=d.get("_name_or_path") or "internvl", model_type="interns1")
    cfg.image_token_id = int(d["image_token_id"])
    cfg.downsample_ratio = d["downsample_ratio"]
    cfg.projector_hidden_act = d["projector_hidden_act"]
    return cfg


def _legacy_vision(vc: dict, d: dict) -> VisionConfig:
    """InternViT (intern_vit_6b) config -> VisionConfig, tiling from the chat config."""
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        _need(vc, k, "vision_config")
    size = d.get("force_image_size") or vc.get("image_size") or 448
    return VisionConfig(
        hidden_size=vc["hidden_size"], num_hidden_layers=vc["num_hidden_layers"],
        num_attention_heads=vc["num_attention_heads"], intermediate_size=vc["intermediate_size"],
        image_size=_side(size), patch_size=_side(vc.get("patch_size", 14)), num_channels=vc.get("num_channels", 3),
        norm_type=vc.get("norm_type", "rms_norm"), layer_norm_eps=vc.get("layer_norm_eps", 1e-6),
        use_qk_norm=bool(vc.get("qk_normalization", False)), attention_bias=bool(vc.get("qkv_bias", False)),
        hidden_act=vc.get("hidden_act", "gelu"),
        min_tiles=d.get("min_dynamic_patch", 1),
        max_tiles=d.get("max_dynamic_patch", 12) if d.get("dynamic_image_size", True) else 1,
        use_thumbnail=bool(d.get("use_thumbnail", True)),
    )


def _parse_internvl_chat(d: dict) -> S1Config:
    """Legacy InternVL-chat config (`llm_config` + InternViT `vision_config`). The
    <IMG_CONTEXT> id is not in these configs; it is set by _legacy_image_token_id."""
    tc = _need(d, "llm_config", "internvl_chat")
    vc = _need(d, "vision_config", "internvl_chat")
    _text_model_type_ok(tc, "internvl_chat llm_config")
    _check_image_path(d, vc, "internvl_chat")
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


def _legacy_post_parse(cfg: S1Config, raw: dict, path: Path) -> None:
    if OPENS1_KEY in raw or raw.get("image_token_id", raw.get("img_context_token_id")) is not None:
        return
    tok = legacy_image_token_id(path)
    if tok is None:
        raise ValueError(f"legacy InternVL-chat checkpoint {path} has no <IMG_CONTEXT> id: no image_token_id in "
                         "config.json and no <IMG_CONTEXT> in added_tokens.json / tokenizer_config.json / tokenizer.json")
    cfg.image_token_id = tok


CONFIG_PARSERS["internvl"] = ("internvl", _parse_internvl)
CONFIG_PARSERS["internvl_chat"] = ("internvl_chat", _parse_internvl_chat)

_VISION_COMMON = [
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    (r"^multi_modal_projector\.", "multi_modal_projector."),
]

# transformers 5 writes InternVL with the older top-level names (language_model.model.*,
# language_model.lm_head, vision_tower.*); its in-memory names (model.*) are accepted too.
LAYOUTS["internvl"] = Layout(
    "internvl",
    renames=[
        (r"^model\.language_model\.", "language_model."),
        (r"^language_model\.model\.", "language_model."),
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^lm_head\.", "lm_head."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^vision_tower\.", "vision_tower."),
        *_VISION_COMMON,
    ],
    # written with the names transformers' own save_pretrained uses for InternVL
    export=[
        (r"^language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
        (r"^vision_tower\.", "vision_tower."),
        (r"^multi_modal_projector\.", "multi_modal_projector."),
    ],
    ignore=_ROTARY_IGNORE,
    drop={r"^ts_(tower|projector)\.": "InternVL has no time-series tower"},
)

_LEGACY_LAYER = r"^vision_model\.encoder\.layers\.(\d+)\."
_OUR_LAYER = r"vision_tower.encoder.layer.\1."
LAYOUTS["internvl_chat"] = Layout(
    "internvl_chat",
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
    ignore=_ROTARY_IGNORE,
)


def _split_qkv(m: re.Match, cfg: S1Config) -> list[Piece]:
    """Legacy fused attn.qkv [3C, ...] -> q_proj, k_proj, v_proj (rows in q, k, v order)."""
    base, kind = m.group(1), m.group(2)
    c = cfg.vision.hidden_size
    return [Piece(f"{base}.{p}_proj.{kind}", None, (slice(i * c, (i + 1) * c),)) for i, p in enumerate("qkv")]


TRANSFORMS.append((r"^(vision_tower\.encoder\.layer\.\d+\.attention)\.qkv\.(weight|bias)$", _split_qkv))

# Intern-S1's own names for the time-series projector (reference §5.3), next to ours
LAYOUTS["interns1"].renames.append((r"^model\.time_series_projector\.", "ts_projector."))
# ====================================================================== end of multimodal layouts (helper B)


# ====================================================================== export for other tools


def _source_dtype(path: Path) -> torch.dtype:
    raw = json.loads((path / "config.json").read_text())
    name = raw.get("dtype") or raw.get("torch_dtype") or (raw.get("text_config") or {}).get("dtype") or "float32"
    return getattr(torch, str(name).removeprefix("torch."), torch.float32)


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


def export_checkpoint(src, out, layout: str = "internvl", dtype=None, max_shard_size: int | str = "4GB") -> dict:
    """Rewrite a checkpoint directory for other tools (`opens1 model export`).

    layout "internvl": transformers' InternVLForConditionalGeneration (config, weight names,
    preprocessor/processor configs); "interns1": Intern-S1's own layout. The tokenizer found
    in `src` (OpenS1's or an Intern-S1 directory) is written as a directory that
    AutoTokenizer.from_pretrained(out, trust_remote_code=True) loads (needs transformers here;
    without it OpenS1's own tokenizer files are written). generation_config.json is copied.
    dtype None keeps the checkpoint's. Returns {"left_out": {reason: [names]}, "tokenizer": kind}."""
    src, out = Path(src), Path(out)
    model = load_model(src, dtype=dtype or _source_dtype(src), device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    dropped = save_pretrained(model, out, max_shard_size=max_shard_size, layout=layout)
    left_out: dict[str, list[str]] = {}
    for name in dropped:
        reason = next(why for pat, why in LAYOUTS[layout].drop.items() if re.match(pat, name))
        left_out.setdefault(reason, []).append(name)
    if layout == "internvl":
        for fname, data in _preprocessor_configs(model.config).items():
            _atomic_write(out / fname, lambda tmp, d=data: Path(tmp).write_text(json.dumps(d, indent=2)))
    gen = src / GENERATION_CONFIG
    if gen.is_file():
        _atomic_write(out / GENERATION_CONFIG, lambda tmp: Path(tmp).write_bytes(gen.read_bytes()))
    return {"left_out": left_out, "tokenizer": _export_tokenizer(src, out, model.config)}


def _export_tokenizer(src: Path, out: Path, cfg: S1Config) -> str:
    from opens1.tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(src)
    except (FileNotFoundError, ValueError):
        return "none (the source has no tokenizer)"
    if cfg.vision is not None and tok.special_tokens.get("<IMG_CONTEXT>") != cfg.image_token_id:
        raise ValueError(f"the tokenizer's <IMG_CONTEXT> is {tok.special_tokens.get('<IMG_CONTEXT>')} but the "
                         f"model's image_token_id is {cfg.image_token_id}")
    try:
        from opens1.tokenizer.hf import export_hf_tokenizer
    except ImportError:  # transformers is optional: OpenS1's own files only
        tok.save_pretrained(out)
        return "opens1 files only (install transformers for an AutoTokenizer directory)"
    export_hf_tokenizer(tok, out)
    return "AutoTokenizer (trust_remote_code)"
