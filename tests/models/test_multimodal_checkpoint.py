"""Multimodal checkpoints: tiny random InternVL models written by transformers load with
opens1.load_model (as written, rewritten in the Intern-S1 HF layout, and rewritten in the
legacy InternVL-chat layout) and give transformers' logits and greedy tokens with images."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import opens1
from opens1.models.checkpoint import legacy_image_token_id, parse_config

transformers = pytest.importorskip("transformers")

IMG = 250  # <IMG_CONTEXT> id in these tiny vocabularies
VISION = {
    "rms": dict(norm_type="rms_norm", use_qk_norm=True, attention_bias=False),
    "ln": dict(norm_type="layer_norm", use_qk_norm=False, attention_bias=True),
}


def hf_config(vision: str, text: str, tie: bool = False):
    v = transformers.InternVLVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=[56, 56],
        patch_size=[14, 14], **VISION[vision])
    common = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=tie,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if text == "qwen3":
        t = transformers.Qwen3Config(**common)
    else:
        t = transformers.Qwen3MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])
    return transformers.InternVLConfig(vision_config=v.to_dict(), text_config=t.to_dict(), image_token_id=IMG,
                                       tie_word_embeddings=tie)


def build_hf(vision: str, text: str, tie: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.InternVLForConditionalGeneration(hf_config(vision, text, tie)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # HF zero-inits CLS/positions and sets lambdas to 0.1: make everything non-trivial
        for name, p in model.named_parameters():
            if "vision_tower" in name or "multi_modal_projector" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def inputs(n_tiles=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(n_tiles, 3, 56, 56, generator=g)
    n_img = n_tiles * 4  # 16 patches per 56px tile -> 4 tokens after pixel shuffle
    ids = [1, 5, 7] + [IMG] * n_img + [9, 11, 13, 2]
    return torch.tensor([ids]), px


def compare(ours, hf_model, max_new_tokens=6):
    ids, px = inputs()
    with torch.no_grad():
        want = hf_model(input_ids=ids, pixel_values=px).logits
        got = ours(ids, pixel_values=px).logits
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    hf_gen = hf_model.generate(input_ids=ids, pixel_values=px, max_new_tokens=max_new_tokens, do_sample=False,
                               min_new_tokens=max_new_tokens)
    our_gen = ours.generate(ids, max_new_tokens=max_new_tokens, pixel_values=px)
    assert our_gen.tolist() == hf_gen.tolist()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved[vision, text] -> (hf model, directory written by transformers' save_pretrained),
    built on first use so the fast tier only pays for the cases it runs."""

    class Cache(dict):
        def __missing__(self, key):
            vision, text = key
            model = build_hf(vision, text, seed=sorted(CASES).index(key))
            d = tmp_path_factory.mktemp(f"internvl_{vision}_{text}")
            model.save_pretrained(d)
            self[key] = (model, d)
            return self[key]

    return Cache()


FAST = [("rms", "qwen3_moe"), ("ln", "qwen3")]
CASES = [(v, t) for v in VISION for t in ("qwen3", "qwen3_moe")]
PARAMS = [c if c in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in CASES]


@pytest.mark.parametrize("vision,text", PARAMS)
def test_transformers_internvl_checkpoint(saved, vision, text):
    hf_model, d = saved[vision, text]
    ours = opens1.load_model(d, dtype=torch.float32, device="cpu")
    assert ours.config.vision.norm_type == VISION[vision]["norm_type"]
    assert ours.config.image_token_id == IMG and ours.config.text.is_moe == (text == "qwen3_moe")
    compare(ours, hf_model)


def to_interns1(src, dst):
    """Rewrite a transformers InternVL save into Intern-S1's HF layout and config."""
    dst.mkdir()
    rename = [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
              ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector.")]
    sd = {}
    for k, v in load_file(src / "model.safetensors").items():
        for a, b in rename:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        sd[k] = v
    save_file(sd, dst / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(model_type="interns1", architectures=["InternS1ForConditionalGeneration"])
    cfg["vision_config"]["model_type"] = "interns1_vision"
    (dst / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("vision,text", [("rms", "qwen3_moe"), pytest.param("ln", "qwen3", marks=pytest.mark.slow)])
def test_interns1_layout(saved, tmp_path, vision, text):
    hf_model, d = saved[vision, text]
    to_interns1(d, tmp_path / "s1")
    ours = opens1.load_model(tmp_path / "s1", dtype=torch.float32, device="cpu")
    compare(ours, hf_model)
    # and OpenS1's own save (Intern-S1 layout) round-trips
    opens1.save_model(ours, tmp_path / "again")
    again = opens1.load_model(tmp_path / "again", dtype=torch.float32, device="cpu")
    ids, px = inputs(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(again(ids, pixel_values=px).logits, ours(ids, pixel_values=px).logits)


def to_legacy(src, dst, vision):
    """Rewrite into the legacy InternVL-chat layout: vision_model.* with a fused qkv, mlp1.{0,1,3}."""
    dst.mkdir()
    sd_in = load_file(src / "model.safetensors")
    sd = {}
    layer_map = {"lambda_1": "ls1", "lambda_2": "ls2", "layernorm_before": "norm1", "layernorm_after": "norm2",
                 "attention.projection_layer": "attn.proj", "attention.q_norm": "attn.q_norm",
                 "attention.k_norm": "attn.k_norm", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for k, v in sd_in.items():
        if k.startswith("language_model."):
            sd[k] = v
        elif k.startswith("multi_modal_projector."):
            part, leaf = k.split(".")[1], k.split(".")[-1]
            sd[f"mlp1.{ {'layer_norm': 0, 'linear_1': 1, 'linear_2': 3}[part] }.{leaf}"] = v
        elif k.startswith("vision_tower.embeddings."):
            sd[{"vision_tower.embeddings.cls_token": "vision_model.embeddings.class_embedding",
                "vision_tower.embeddings.position_embeddings": "vision_model.embeddings.position_embedding",
                }.get(k, k.replace("vision_tower.embeddings.patch_embeddings.projection",
                                   "vision_model.embeddings.patch_embedding"))] = v
        elif k.startswith("vision_tower.encoder.layer."):
            i, rest = k[len("vision_tower.encoder.layer."):].split(".", 1)
            if rest.startswith(("attention.q_proj", "attention.k_proj", "attention.v_proj")):
                if rest.startswith("attention.q_proj"):
                    leaf = rest.rsplit(".", 1)[1]
                    parts = [sd_in[f"vision_tower.encoder.layer.{i}.attention.{p}_proj.{leaf}"] for p in "qkv"]
                    sd[f"vision_model.encoder.layers.{i}.attn.qkv.{leaf}"] = torch.cat(parts, 0)
                continue
            for a, b in layer_map.items():
                if rest == a or rest.startswith(a + "."):
                    sd[f"vision_model.encoder.layers.{i}.{b}{rest[len(a):]}"] = v
                    break
            else:
                raise AssertionError(f"unmapped {k}")
        else:
            raise AssertionError(f"unmapped {k}")
    save_file(sd, dst / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    vc = cfg["vision_config"]
    legacy = {
        "model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "template": "internvl2_5",
        "downsample_ratio": 0.5, "ps_version": "v2", "select_layer": -1, "force_image_size": 56,
        "dynamic_image_size": True, "max_dynamic_patch": 6, "min_dynamic_patch": 1, "use_thumbnail": True,
        "llm_config": cfg["text_config"],
        "vision_config": {"model_type": "intern_vit_6b", "hidden_size": vc["hidden_size"],
                          "num_hidden_layers": vc["num_hidden_layers"], "num_attention_heads": vc["num_attention_heads"],
                          "intermediate_size": vc["intermediate_size"], "image_size": 56, "patch_size": 14,
                          "qkv_bias": VISION[vision]["attention_bias"], "qk_normalization": VISION[vision]["use_qk_norm"],
                          "norm_type": VISION[vision]["norm_type"], "layer_norm_eps": 1e-6, "drop_path_rate": 0.0},
    }
    (dst / "config.json").write_text(json.dumps(legacy))
    (dst / "added_tokens.json").write_text(json.dumps({"<img>": 248, "</img>": 249, "<IMG_CONTEXT>": IMG}))


@pytest.mark.parametrize("vision,text", [("rms", "qwen3_moe"), pytest.param("ln", "qwen3", marks=pytest.mark.slow)])
def test_legacy_internvl_chat_layout(saved, tmp_path, vision, text):
    hf_model, d = saved[vision, text]
    to_legacy(d, tmp_path / "legacy", vision)
    assert legacy_image_token_id(tmp_path / "legacy") == IMG
    ours = opens1.load_model(tmp_path / "legacy", dtype=torch.float32, device="cpu")
    assert ours.config.image_token_id == IMG
    assert (ours.config.vision.max_tiles, ours.config.vision.image_size) == (6, 56)
    compare(ours, hf_model, max_new_tokens=4)


@pytest.mark.slow
def test_tied_embeddings_follow_top_level_flag(tmp_path):
    """transformers 5 ties InternVL's head by the top-level tie_word_embeddings (default True)."""
    hf_model = build_hf("ln", "qwen3", tie=True, seed=7)
    assert hf_model.lm_head.weight is hf_model.model.language_model.embed_tokens.weight
    hf_model.save_pretrained(tmp_path / "tied")
    ours = opens1.load_model(tmp_path / "tied", dtype=torch.float32, device="cpu")
    assert ours.config.text.tie_word_embeddings
    compare(ours, hf_model, max_new_tokens=3)


def test_config_parsing_and_errors(saved, tmp_path):
    _, d = saved["rms", "qwen3_moe"]
    raw = json.loads((d / "config.json").read_text())
    assert isinstance(raw["vision_config"]["image_size"], list)  # HF writes [56, 56]
    cfg, layout = parse_config(raw)
    assert layout == "internvl" and cfg.vision.image_size == 56 and cfg.vision.use_qk_norm
    assert cfg.image_tokens_per_tile == 4
    for bad, msg in [({"vision_feature_layer": -2}, "vision_feature_layer"),
                     ({"vision_feature_select_strategy": "full"}, "select_strategy"),
                     ({"projector_hidden_act": "relu"}, "projector_hidden_act")]:
        with pytest.raises(ValueError, match=msg):
            parse_config({**raw, **bad})
    with pytest.raises(ValueError, match="use_mean_pooling"):
        parse_config({**raw, "vision_config": {**raw["vision_config"], "use_mean_pooling": False}})
    with pytest.raises(ValueError, match="not supported"):
        parse_config({**raw, "text_config": {**raw["text_config"], "model_type": "qwen2"}})
    # a legacy checkpoint without any <IMG_CONTEXT> id is refused clearly
    to_legacy(d, tmp_path / "legacy", "rms")
    (tmp_path / "legacy" / "added_tokens.json").unlink()
    with pytest.raises(ValueError, match="IMG_CONTEXT"):
        opens1.load_model(tmp_path / "legacy", dtype=torch.float32, device="cpu")
    # a missing vision tensor is reported by name
    shutil.copytree(d, tmp_path / "broken")
    sd = load_file(tmp_path / "broken" / "model.safetensors")
    sd.pop("vision_tower.encoder.layer.1.lambda_2")
    save_file(sd, tmp_path / "broken" / "model.safetensors")
    with pytest.raises(ValueError, match="lambda_2"):
        opens1.load_model(tmp_path / "broken", dtype=torch.float32, device="cpu")


@pytest.mark.slow
def test_tiny_preset_with_images_and_series_round_trips(tmp_path):
    """Both towers (incl. the time-series tower's persistent sinusoid table) survive
    save_model -> load_model, and a prompt with an image and an ECG series runs."""
    from opens1.config import get_preset
    from opens1.common.paths import find_data
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.images import image_to_pixel_values
    from opens1.processing.series import preprocess_series, read_wfdb, series_num_tokens
    from PIL import Image

    cfg = get_preset("debug")
    cfg.image_token_id, cfg.ts_token_id = 7, 8
    torch.manual_seed(0)
    model = S1ForConditionalGeneration(cfg).eval()
    px = image_to_pixel_values(Image.new("RGB", (112, 56), (200, 30, 90)), cfg.vision)  # 2x1 grid + thumbnail
    values, fs = read_wfdb(find_data(None, "timeseries/100.hea").with_suffix(""), sampto=1800)
    x, sr = preprocess_series(values, fs)
    n_ts = series_num_tokens(x.shape[0], sr, cfg.timeseries)
    ids = torch.tensor([[1] + [7] * (px.shape[0] * cfg.image_tokens_per_tile) + [2] + [8] * n_ts + [3]])
    kw = dict(pixel_values=px, time_series=[x], sampling_rates=[sr])
    opens1.save_model(model, tmp_path / "m")
    keys = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.ts_tower.encoder_embed.pos_encoder.pe" in keys and "model.vision_tower.embeddings.cls_token" in keys
    again = opens1.load_model(tmp_path / "m", dtype=torch.float32, device="cpu")
    with torch.no_grad():
        want = model(ids, **kw).logits
        torch.testing.assert_close(again(ids, **kw).logits, want)
    # the features really enter the prompt: another series changes the logits after it
    with torch.no_grad():
        other = model(ids, pixel_values=px, time_series=[torch.flip(x, [0])], sampling_rates=[sr]).logits
    assert not torch.allclose(other[0, -1], want[0, -1])
    out = again.generate(ids, max_new_tokens=3, **kw)
    assert out.shape == (1, ids.shape[1] + 3)
