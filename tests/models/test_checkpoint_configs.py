"""config.json parsing follows transformers' config classes: their defaults for every key a
config leaves out, for configs as transformers writes them (full, and diff-only both as
transformers 5 writes it and as transformers 4 did: only the values that differ from the
class defaults). transformers 5.23 has no InternS1 classes: their defaults (InternS1VisionConfig
= InternVLVisionConfig's, InternS1Config = InternVLConfig's without the tying flag, per
src/transformers/models/interns1/configuration_interns1.py) are checked by hand-written configs."""

import json

import pytest

from opens1.models.checkpoint import HF_DEFAULTS, generation_defaults, parse_config, read_generation_config

transformers = pytest.importorskip("transformers")

SMALL_TEXT = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
SMALL_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _class_value(cfg, key):
    if key == "rope_theta":
        return cfg.rope_parameters["rope_theta"]
    if key == "head_dim":
        return getattr(cfg, "head_dim", None)
    value = getattr(cfg, key)
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("model_type, cls", [
    ("qwen3", "Qwen3Config"), ("qwen3_moe", "Qwen3MoeConfig"),
    ("internvl_vision", "InternVLVisionConfig"), ("internvl", "InternVLConfig"),
])
def test_default_tables_equal_transformers(model_type, cls):
    cfg = getattr(transformers, cls)()
    for key, value in HF_DEFAULTS[model_type].items():
        if model_type == "qwen3_moe" and key == "mlp_only_layers":
            assert list(cfg.mlp_only_layers) == value
            continue
        assert _class_value(cfg, key) == value, key
    assert HF_DEFAULTS["interns1_vision"] == HF_DEFAULTS["internvl_vision"]
    assert {k: v for k, v in HF_DEFAULTS["internvl"].items() if k != "tie_word_embeddings"} == HF_DEFAULTS["interns1"]


def v4_diff(d: dict, defaults: dict) -> dict:
    """transformers 4's use_diff: drop every value equal to the class default (recursively)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and isinstance(defaults.get(k), dict) and k.endswith("_config"):
            out[k] = {"model_type": v["model_type"], **v4_diff(v, defaults[k])}
        elif k not in defaults or defaults[k] != v or k == "model_type":
            out[k] = v
    return out


def _check_text(t, hf):
    assert t.vocab_size == hf.vocab_size and t.hidden_size == hf.hidden_size
    assert t.num_key_value_heads == hf.num_key_value_heads and t.num_hidden_layers == hf.num_hidden_layers
    assert t.head_dim == (getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads)
    assert t.rope_theta == hf.rope_parameters["rope_theta"] and t.rms_norm_eps == hf.rms_norm_eps
    assert t.max_position_embeddings == hf.max_position_embeddings and t.attention_bias == hf.attention_bias
    if hasattr(hf, "num_experts"):
        assert (t.num_experts, t.num_experts_per_tok, t.moe_intermediate_size, t.norm_topk_prob) == (
            hf.num_experts, hf.num_experts_per_tok, hf.moe_intermediate_size, hf.norm_topk_prob)


@pytest.mark.parametrize("text_cls", ["Qwen3Config", "Qwen3MoeConfig"])
@pytest.mark.parametrize("form", ["full", "diff", "v4_diff"])
def test_text_configs_as_transformers_writes_them(text_cls, form):
    cls = getattr(transformers, text_cls)
    hf = cls(**SMALL_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    full = json.loads(hf.to_json_string(use_diff=False))
    d = {"full": full, "diff": json.loads(hf.to_json_string(use_diff=True)),
         "v4_diff": v4_diff(full, json.loads(cls().to_json_string(use_diff=False)))}[form]
    cfg, layout = parse_config(d)
    assert layout == "qwen3"
    _check_text(cfg.text, hf)


@pytest.mark.parametrize("form", ["full", "diff", "v4_diff"])
@pytest.mark.parametrize("vision", [{}, dict(norm_type="rms_norm", use_qk_norm=True, attention_bias=True)])
def test_internvl_configs_as_transformers_writes_them(form, vision):
    hf = transformers.InternVLConfig(
        vision_config={**SMALL_VISION, **vision},
        text_config={"model_type": "qwen3", **SMALL_TEXT}, image_token_id=299)
    full = json.loads(hf.to_json_string(use_diff=False))
    defaults = json.loads(transformers.InternVLConfig(text_config={"model_type": "qwen3"}).to_json_string(use_diff=False))
    d = {"full": full, "diff": json.loads(hf.to_json_string(use_diff=True)), "v4_diff": v4_diff(full, defaults)}[form]
    if form == "v4_diff":
        assert "attention_bias" not in d["vision_config"] or vision  # the default is omitted
    cfg, layout = parse_config(d)
    assert layout == "internvl"
    v, hv = cfg.vision, hf.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (32, 2, 4, 64)
    assert (v.attention_bias, v.use_qk_norm, v.norm_type, v.layer_norm_eps) == (
        hv.attention_bias, hv.use_qk_norm, hv.norm_type, hv.layer_norm_eps)
    assert (v.image_size, v.patch_size, v.layer_scale_init_value) == (448, 14, 0.1)
    assert cfg.image_token_id == 299 and cfg.text.tie_word_embeddings == hf.tie_word_embeddings
    _check_text(cfg.text, hf.text_config)


def test_interns1_diff_config_takes_the_class_defaults():
    """An Intern-S1 config with only what differs from InternS1Config's defaults."""
    d = {"model_type": "interns1", "text_config": {"model_type": "qwen3", **SMALL_TEXT},
         "vision_config": {"model_type": "interns1_vision", **SMALL_VISION}}
    cfg, layout = parse_config(d)
    assert layout == "interns1"
    assert cfg.vision.attention_bias is False and cfg.vision.use_qk_norm is False  # HF's defaults, not OpenS1's
    assert cfg.vision.norm_type == "layer_norm" and cfg.vision.image_size == 448
    assert cfg.image_token_id == 151667 and cfg.downsample_ratio == 0.5  # InternS1Config's (real checkpoints set 152957)
    assert cfg.text.head_dim == 128 and cfg.text.rope_theta == 10000.0 and not cfg.text.tie_word_embeddings
    # an empty vision_config is the default InternS1VisionConfig (the 300M InternViT)
    cfg, _ = parse_config({**d, "vision_config": {"model_type": "interns1_vision"}})
    assert (cfg.vision.hidden_size, cfg.vision.num_hidden_layers, cfg.vision.intermediate_size) == (1024, 24, 4096)
    # no vision_config at all: OpenS1's text-only save
    assert parse_config({k: v for k, v in d.items() if k != "vision_config"})[0].vision is None


def test_generation_config(tmp_path):
    real = tmp_path / "mini"
    real.mkdir()
    from tests.tokenizer.interns1_fixture import DATA

    (real / "generation_config.json").write_text((DATA / "generation_config.json").read_text())
    g = read_generation_config(real)
    assert g["eos_token_id"] == [151645] and g["bos_token_id"] == 151643
    assert generation_defaults(real) == {"eos_token_id": [151645]}  # the real file sets no sampling
    (real / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "top_k": 50, "eos_token_id": [151645, 151643],
         "max_new_tokens": 32768, "repetition_penalty": 1.0}))
    assert generation_defaults(real) == {"temperature": 0.8, "top_p": 0.95, "top_k": 50, "max_tokens": 32768,
                                         "repetition_penalty": 1.0, "eos_token_id": [151645, 151643]}
    (real / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.8}))
    assert generation_defaults(real)["temperature"] == 0.0  # greedy, as transformers generates
    assert read_generation_config(tmp_path) == {} and generation_defaults(tmp_path) == {}
    (real / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="generation_config"):
        read_generation_config(real)
