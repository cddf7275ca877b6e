"""Checkpoints: tiny random models written by transformers load and agree with
transformers (logits and greedy tokens); our save round-trips bit-exactly; bad
checkpoints fail with one clear error; FP8 block-quantised weights dequantise."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import opens1
from opens1.models.checkpoint import CONFIG_LIMITS, dequantize_fp8, parse_config

transformers = pytest.importorskip("transformers")

COMMON = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=128, rope_theta=10000.0)


def write_hf(path, kind: str, shard: str | None = None):
    torch.manual_seed({"dense": 0, "tied": 1, "moe": 2}[kind])
    if kind == "moe":
        cfg = transformers.Qwen3MoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                          norm_topk_prob=True, mlp_only_layers=[0])
        model = transformers.Qwen3MoeForCausalLM(cfg)
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**COMMON, tie_word_embeddings=kind == "tied"))
    model.eval()
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    return model


@pytest.fixture(scope="module", params=["dense", "tied", "moe"])
def hf_ckpt(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    # the MoE one is sharded, to exercise the index
    model = write_hf(path, request.param, shard="20KB" if request.param == "moe" else None)
    return request.param, path, model


def test_load_matches_transformers(hf_ckpt):
    kind, path, hf = hf_ckpt
    if kind == "moe":
        assert (path / "model.safetensors.index.json").is_file()
    model = opens1.load_model(path)
    assert model.dtype == torch.float32 and not model.training
    assert model.config.text.tie_word_embeddings == (kind == "tied")
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)
    ref = hf.generate(ids, max_new_tokens=10, do_sample=False)
    got = model.generate(ids, max_new_tokens=10)
    assert torch.equal(got, ref)


def test_round_trip_is_bit_exact(hf_ckpt, tmp_path):
    kind, path, _ = hf_ckpt
    model = opens1.load_model(path)
    opens1.save_model(model, tmp_path, max_shard_size="16KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["model_type"] == "interns1" and "opens1_config" in conf
    keys = set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"])
    assert any(k.startswith("model.language_model.layers.0.") for k in keys)
    if kind == "moe":
        assert "model.language_model.layers.1.mlp.experts.3.down_proj.weight" in keys
    back = opens1.load_model(tmp_path)
    assert back.config == model.config
    sd1, sd2 = model.state_dict(), back.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_interns1_layout_without_our_config_key(tmp_path):
    write_hf(tmp_path / "src", "moe")
    model = opens1.load_model(tmp_path / "src")
    opens1.save_model(model, tmp_path / "s1")
    conf = json.loads((tmp_path / "s1" / "config.json").read_text())
    del conf["opens1_config"]  # parse the HF-style text_config instead
    (tmp_path / "s1" / "config.json").write_text(json.dumps(conf))
    back = opens1.load_model(tmp_path / "s1")
    assert back.config.text == model.config.text
    ids = torch.randint(0, 101, (1, 7))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


def test_bf16_round_trip(tmp_path):
    write_hf(tmp_path / "src", "dense")
    model = opens1.load_model(tmp_path / "src", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    opens1.save_model(model, tmp_path / "out")
    back = opens1.load_model(tmp_path / "out", dtype="bfloat16")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))


def test_old_style_config_and_fused_experts(tmp_path):
    """transformers-4 style config (top-level rope_theta, num_experts) and experts stored
    fused as transformers 5 keeps them in memory (gate_up_proj [E, 2I, H])."""
    src = tmp_path / "src"
    hf = write_hf(src, "moe")
    conf = json.loads((src / "config.json").read_text())
    conf["rope_theta"] = conf.pop("rope_parameters")["rope_theta"]
    conf["num_experts"] = conf.pop("num_local_experts")
    (src / "config.json").write_text(json.dumps(conf))
    sd = load_file(src / "model.safetensors")
    fused = {k: v for k, v in sd.items() if ".experts." not in k}
    E = 4
    for layer in (1,):
        p = f"model.layers.{layer}.mlp.experts"
        fused[f"{p}.gate_up_proj"] = torch.stack(
            [torch.cat([sd[f"{p}.{e}.gate_proj.weight"], sd[f"{p}.{e}.up_proj.weight"]]) for e in range(E)])
        fused[f"{p}.down_proj"] = torch.stack([sd[f"{p}.{e}.down_proj.weight"] for e in range(E)])
    (src / "model.safetensors").unlink()
    save_file(fused, src / "model.safetensors")
    model = opens1.load_model(src)
    ids = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_missing_values_take_transformers_defaults():
    """A key the config leaves out has the value transformers' class gives it (more in
    test_checkpoint_configs.py): rope_theta 10000, Qwen3's head_dim 128, Qwen3-MoE's
    hidden_size // num_attention_heads."""
    conf = {"model_type": "qwen3", **{k: v for k, v in COMMON.items() if k != "rope_theta"}, "rms_norm_eps": 1e-6}
    assert parse_config(conf)[0].text.rope_theta == 10000.0
    conf["rope_parameters"] = {"rope_type": "default", "rope_theta": 5.0}
    assert parse_config(conf)[0].text.rope_theta == 5.0
    del conf["head_dim"]
    assert parse_config(conf)[0].text.head_dim == transformers.Qwen3Config().head_dim == 128
    moe = {**conf, "model_type": "qwen3_moe", "num_experts": 4}
    assert parse_config(moe)[0].text.head_dim == 32 // 4
    with pytest.raises(ValueError, match="vocab_size"):
        parse_config({**conf, "vocab_size": None})


def test_mismatched_checkpoint_names_every_problem(tmp_path):
    write_hf(tmp_path, "dense")
    sd = load_file(tmp_path / "model.safetensors")
    del sd["model.layers.1.self_attn.k_norm.weight"]
    sd["model.layers.0.mlp.extra.weight"] = torch.zeros(3)
    sd["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(7, 32)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as e:
        opens1.load_model(tmp_path)
    msg = str(e.value)
    assert "language_model.layers.1.self_attn.k_norm.weight" in msg
    assert "model.layers.0.mlp.extra.weight" in msg
    assert "model.layers.0.self_attn.q_proj.weight (7, 32)" in msg


@pytest.mark.parametrize("name", ["../outside.safetensors", "../../etc/passwd", "/etc/passwd", "sub/../../x",
                                  "C:/Windows/x.safetensors", "..\\x.safetensors", "", 7])
def test_shard_index_names_stay_inside_the_model_directory(tmp_path, name):
    write_hf(tmp_path / "m", "dense", shard="20KB")
    index = tmp_path / "m" / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    key, shard = next(iter(data["weight_map"].items()))
    # a real shard outside the directory: reading it would succeed, so only the name check stops it
    (tmp_path / "outside.safetensors").write_bytes((tmp_path / "m" / shard).read_bytes())
    data["weight_map"][key] = name
    index.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a file inside the model directory") as e:
        opens1.load_model(tmp_path / "m")
    assert key in str(e.value)


def test_shard_in_a_subdirectory_and_symlinked_shards_load(tmp_path):
    # what is allowed: relative names below the directory, and symlinks inside it (the HF cache's layout)
    write_hf(tmp_path / "m", "dense", shard="20KB")
    m = tmp_path / "m"
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (m / "sub").mkdir()
    index = m / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first, second = sorted(set(data["weight_map"].values()))[:2]
    (m / first).rename(m / "sub" / first)
    (m / second).rename(blobs / second)
    (m / second).symlink_to(blobs / second)
    data["weight_map"] = {k: ("sub/" + v if v == first else v) for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data))
    assert opens1.load_model(m).config.text.hidden_size == 32


def test_bad_index_is_a_clear_error(tmp_path):
    write_hf(tmp_path, "dense", shard="20KB")
    index = tmp_path / "model.safetensors.index.json"
    for text in ("{not json", json.dumps({"metadata": {}}), json.dumps({"weight_map": ["a"]})):
        index.write_text(text)
        with pytest.raises(ValueError, match="weight_map"):
            opens1.load_model(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("field,value", [("num_hidden_layers", 1_000_000), ("hidden_size", 10**9),
                                         ("vocab_size", 2**40), ("num_experts", 10**6), ("head_dim", -1)])
def test_absurd_config_refused_before_building(tmp_path, field, value, monkeypatch):
    write_hf(tmp_path, "dense")
    conf = json.loads((tmp_path / "config.json").read_text())
    conf[field] = value
    if field == "num_experts":
        conf.update(model_type="qwen3_moe", num_experts_per_tok=2, moe_intermediate_size=16)
    (tmp_path / "config.json").write_text(json.dumps(conf))
    built = []
    import opens1.models.s1 as s1

    monkeypatch.setattr(s1.S1ForConditionalGeneration, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match=rf"text\.{field} = .* is outside 0\.\.[0-9,]+; refusing to build"):
        opens1.load_model(tmp_path)
    assert built == []  # nothing was built, not even on the meta device
    limit = CONFIG_LIMITS["text"][field]
    with pytest.raises(ValueError, match=f"{limit:,}"):
        parse_config(conf)


def test_config_limits_sit_above_real_models():
    from opens1.config import PRESETS, get_preset
    from opens1.models.checkpoint import check_config_limits

    for name in PRESETS:  # every preset, Intern-S1 included, passes
        check_config_limits(get_preset(name))
    cfg = get_preset("tiny")
    cfg.vision.num_hidden_layers = 5000
    with pytest.raises(ValueError, match="vision.num_hidden_layers"):
        check_config_limits(cfg)


def test_pickled_weights_are_refused(tmp_path):
    write_hf(tmp_path, "dense")
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="never loaded"):
        opens1.load_model(tmp_path)


def quantize_fp8(w: torch.Tensor, block=(16, 16)):
    """Block-wise FP8 e4m3 quantisation as DeepSeek/Qwen FP8 releases store it."""
    out, inp = w.shape
    so, si = -(-out // block[0]), -(-inp // block[1])
    scale = torch.empty(so, si)
    q = torch.empty_like(w, dtype=torch.float8_e4m3fn)
    for i in range(so):
        for j in range(si):
            tile = w[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]]
            s = tile.abs().max().clamp_min(1e-12) / 448.0
            scale[i, j] = s
            q[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]] = (tile / s).to(torch.float8_e4m3fn)
    return q, scale


@pytest.mark.parametrize("kind,block", [("dense", [16, 16]), ("moe", [32, 32]), ("dense", [128, 128])])
def test_fp8_checkpoint_dequantises(tmp_path, kind, block):
    hf = write_hf(tmp_path, kind)
    sd = load_file(tmp_path / "model.safetensors")
    quant = {}
    for k, v in list(sd.items()):
        if k.endswith("proj.weight"):  # attention, MLP and expert matrices; norms, embeddings, head stay
            q, s = quantize_fp8(v, block)
            sd[k], sd[k + "_scale_inv"] = q, s
            quant[k] = q.float() * s.repeat_interleave(block[0], 0)[: v.shape[0]].repeat_interleave(block[1], 1)[:, : v.shape[1]]
    save_file(sd, tmp_path / "model.safetensors")
    conf = json.loads((tmp_path / "config.json").read_text())
    conf["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                   "weight_block_size": block}
    (tmp_path / "config.json").write_text(json.dumps(conf))
    model = opens1.load_model(tmp_path)
    params = model.state_dict()
    wk = params["language_model.layers.0.self_attn.qkv_proj.weight"][32:48]  # k rows of the fused qkv
    assert torch.equal(wk, quant["model.layers.0.self_attn.k_proj.weight"])
    if kind == "moe":
        gu = params["language_model.layers.1.mlp.experts.gate_up_proj"]
        assert torch.equal(gu[2, 16:], quant["model.layers.1.mlp.experts.2.up_proj.weight"])
    ids = torch.randint(0, 101, (1, 8))
    with torch.no_grad():  # FP8 error is small next to the logits' spread
        diff = (model(ids).logits - hf(ids).logits).abs().max()
    assert diff < 0.1


def test_dequantize_fp8_shapes():
    w = torch.randn(300, 200)
    q, s = quantize_fp8(w, (128, 128))
    assert s.shape == (3, 2)
    d = dequantize_fp8(q, s, [128, 128])
    assert (d - w).abs().max() < 0.07 * w.abs().max()
    with pytest.raises(ValueError, match="does not fit"):
        dequantize_fp8(q, s[:2], [128, 128])
