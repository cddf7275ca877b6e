"""HF config dicts <-> OpenS1's configs: transformers' defaults per config class, the Qwen3
text config, the InternViT vision config, generation_config.json, and the size limits a
config must pass before a model is built. Layout modules (qwen3.py, interns1.py, ...) use
these to parse their own top-level configs."""

from __future__ import annotations

import json
from pathlib import Path

from opens1.config import S1Config, TextConfig, VisionConfig

# our own S1Config inside config.json, for an exact round trip of what OpenS1 saves
OPENS1_KEY = "opens1_config"


def need(d: dict, key: str, where: str):
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
        vocab_size=need(d, "vocab_size", where),
        hidden_size=need(d, "hidden_size", where),
        intermediate_size=need(d, "intermediate_size", where),
        num_hidden_layers=need(d, "num_hidden_layers", where),
        num_attention_heads=need(d, "num_attention_heads", where),
        num_key_value_heads=need(d, "num_key_value_heads", where),
        head_dim=need(d, "head_dim", where),
        rms_norm_eps=need(d, "rms_norm_eps", where),
        rope_theta=float(theta),
        rope_scaling=scaling,
        max_position_embeddings=need(d, "max_position_embeddings", where),
        tie_word_embeddings=bool(d["tie_word_embeddings"]),
        attention_bias=bool(d["attention_bias"]),
        num_experts=int(n_experts or 0),
        bos_token_id=d["bos_token_id"],
        eos_token_id=d["eos_token_id"],
        pad_token_id=d["pad_token_id"],
        initializer_range=d["initializer_range"],
    )
    if t.num_experts:
        t.num_experts_per_tok = need(d, "num_experts_per_tok", where)
        t.moe_intermediate_size = need(d, "moe_intermediate_size", where)
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


def side(x):
    return int(x[0]) if isinstance(x, (list, tuple)) else int(x)


def parse_vision_config(d: dict, model_type: str = "interns1_vision") -> VisionConfig:
    """HF InternS1VisionConfig / InternVLVisionConfig dict -> VisionConfig (names map one to
    one; missing keys take the class's defaults, e.g. attention_bias=False). Image tiling
    (min/max tiles, thumbnail) is not part of these configs: VisionConfig's defaults."""
    d = with_defaults({k: v for k, v in d.items() if v is not None}, model_type)
    known = {f for f in VisionConfig.__dataclass_fields__}
    v = {k: d[k] for k in known if k in d}
    for k in ("image_size", "patch_size"):
        v[k] = side(v[k])
    return VisionConfig(**v)


_TILING = ("min_tiles", "max_tiles", "use_thumbnail")  # preprocessor settings, not vision-config keys


def vision_config_to_hf(v: VisionConfig, model_type: str = "interns1_vision") -> dict:
    d = {k: getattr(v, k) for k in VisionConfig.__dataclass_fields__ if k not in _TILING}
    d.update(model_type=model_type, image_size=[v.image_size] * 2, patch_size=[v.patch_size] * 2,
             use_mean_pooling=True, use_absolute_position_embeddings=True, use_mask_token=False)
    return d


def check_image_path(d: dict, vc: dict, where: str) -> None:
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


def check_text_model_type(tc: dict, where: str) -> None:
    mt = tc.get("model_type")
    if mt not in (None, "qwen3", "qwen3_moe"):
        raise ValueError(f"config.json ({where}): text model_type {mt!r} is not supported (only qwen3 / qwen3_moe)")


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
                    f"(the limit is a sanity bound far above any real checkpoint: opens1.models.checkpoint.configs.CONFIG_LIMITS)"
                )
