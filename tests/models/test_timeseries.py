"""The time-series tower: token arithmetic, reference-equivalent stages, the real ECG record."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from opens1.config import TimeSeriesConfig, get_preset
from opens1.common.paths import find_data
from opens1.models.timeseries import (
    TimeSeriesProjector,
    TimeSeriesTower,
    adaptive_stride,
    num_tokens,
    patch_geometry,
)
from opens1.processing.series import preprocess_series, read_wfdb, series_num_tokens


def tiny_cfg(**kw) -> TimeSeriesConfig:
    return dataclasses.replace(get_preset("tiny").timeseries, **kw)


def make_tower(cfg=None, seed=0) -> TimeSeriesTower:
    torch.manual_seed(seed)
    tower = TimeSeriesTower(cfg or tiny_cfg())
    tower.init_weights()
    return tower.eval()


def test_stride_table_and_reference_token_counts():
    assert [adaptive_stride(sr) for sr in (16000, 360, 100, 1e-3)] == [160, 136, 24, 2]
    assert patch_geometry(64000, 16000) == (160, 320, 399)
    assert num_tokens(64000, 16000) == 100  # 399 patches -> 199 frames -> 100 tokens
    assert num_tokens(3000, 100) == 31  # 124 -> 62 -> 31
    # float32 formula written out independently
    for sr in (0.5, 7.0, 50.0, 250.0, 1000.0, 44100.0):
        s = math.floor(160 / (1 + np.exp(np.float32(-sr / 100), dtype=np.float32)) ** 6)
        assert adaptive_stride(sr) == s


@pytest.mark.parametrize("sr", [1.0, 100.0, 360.0, 16000.0])
def test_tower_emits_exactly_series_num_tokens(sr):
    tower = make_tower()
    stride = adaptive_stride(sr)
    lengths = [2 * stride + 1, 2 * stride + 2, 5 * stride - 1, 7 * stride + 3, 13 * stride]
    xs = [torch.randn(t, 1 + i % 3) for i, t in enumerate(lengths)]
    with torch.no_grad():
        outs = tower(xs, [sr] * len(xs))
    for x, o in zip(xs, outs):
        n = series_num_tokens(x.shape[0], sr, tower.config)
        assert o.shape == (n, tower.config.output_dim) and n >= 1
        assert torch.isfinite(o).all()


def test_too_short_is_a_clear_error():
    tower = make_tower()
    with pytest.raises(ValueError, match="too short"):
        tower([torch.randn(48, 1)], [100.0])  # exactly one patch -> zero tokens
    with pytest.raises(ValueError, match="too short"):
        series_num_tokens(10, 16000.0)
    assert series_num_tokens(49, 100.0) == 1
    with pytest.raises(ValueError, match="sampling rates"):
        tower([torch.randn(100, 1)], [])


def reference_patch_stage(tower, x, sr, interleaved):
    """Stage A written the way the reference describes it: sequence-first nn.TransformerEncoder
    over each (patch, channel), explicit window loop, explicit even/odd concatenation."""
    emb = tower.encoder_embed
    stride, patch, n = patch_geometry(x.shape[0], sr)
    padded = torch.cat([x, torch.zeros((n - 1) * stride + patch - x.shape[0], x.shape[1])])
    layer = emb.transformer_encoder.layers[0]
    ref_layer = nn.TransformerEncoderLayer(layer.self_attn.embed_dim, layer.self_attn.num_heads,
                                           dim_feedforward=layer.linear1.out_features)
    ref_layer.load_state_dict(layer.state_dict())
    ref_layer.eval()
    vecs = []
    for i in range(n):
        win = padded[i * stride: i * stride + patch]  # [L, C]
        c = win.shape[1]
        seqs = win.reshape(c, 1, patch) if interleaved else win.T.reshape(c, 1, patch)
        h = F.relu(emb.conv(seqs))  # [C, D, L]
        h = h.permute(2, 0, 1) + emb.pos_encoder.pe[:patch]  # [L, C, D], sequence first
        h = ref_layer(h).mean(0)  # [C, D]
        vecs.append(h.mean(0))
    v = torch.stack(vecs)
    if v.shape[0] % 2:
        v = v[:-1]
    return torch.stack([torch.cat([v[2 * k], v[2 * k + 1]]) for k in range(v.shape[0] // 2)])


@pytest.mark.parametrize("interleaved", [False, True])
def test_patch_stage_matches_reference(interleaved):
    tower = make_tower(tiny_cfg(interleaved_channels=interleaved))
    tower.encoder_embed.chunk = 7  # exercise chunking
    x = torch.randn(700, 3)
    with torch.no_grad():
        got = tower.encoder_embed(x, 100.0)
        want = reference_patch_stage(tower, x, 100.0, interleaved)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the two channel layouts really differ for C > 1, and agree for C == 1
    other = make_tower(tiny_cfg(interleaved_channels=not interleaved))
    other.load_state_dict(tower.state_dict())
    with torch.no_grad():
        assert not torch.allclose(other.encoder_embed(x, 100.0), got, atol=1e-4)
        torch.testing.assert_close(other.encoder_embed(x[:, :1], 100.0), tower.encoder_embed(x[:, :1], 100.0))


def test_encoder_matches_transformers_whisper_layers():
    whisper = pytest.importorskip("transformers.models.whisper.modeling_whisper")
    from transformers import WhisperConfig

    cfg = tiny_cfg(encoder_layers=2)
    tower = make_tower(cfg)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in tower.encoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    wcfg = WhisperConfig(d_model=cfg.d_model, encoder_attention_heads=cfg.encoder_attention_heads,
                         encoder_ffn_dim=cfg.encoder_ffn_dim, activation_function="gelu", dropout=0.0,
                         attn_implementation="eager")
    enc = tower.encoder
    frames = torch.randn(2, 9, cfg.embed_dim)
    with torch.no_grad():
        # reference pipeline (reference §5.2) with HF Whisper layers and an explicit causal mask
        x = enc.adapt_in(frames).transpose(1, 2)
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(x)))).transpose(1, 2)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        t = x.shape[1]
        mask = torch.full((t, t), torch.finfo(x.dtype).min).triu(1)[None, None].expand(2, 1, t, t)
        for ours in enc.layers:
            ref = whisper.WhisperEncoderLayer(wcfg).eval()
            ref.load_state_dict(ours.state_dict())
            x = ref(x, mask)
        want = enc.adapt_out(enc.layer_norm(x))
        got = enc(frames)
    assert got.shape == (2, 5, cfg.output_dim)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_positions_beyond_table_are_zero_and_causality():
    cfg = tiny_cfg(max_source_positions=4)
    tower = make_tower(cfg)
    frames = torch.randn(1, 16, cfg.embed_dim)
    with torch.no_grad():
        full = tower.encoder(frames)  # 8 positions, table of 4: must not fail
        # causal: the first outputs do not depend on later frames (beyond conv reach)
        prefix = tower.encoder(frames[:, :8])
    assert full.shape[1] == 8
    torch.testing.assert_close(full[:, :3], prefix[:, :3], atol=1e-5, rtol=1e-5)


def test_batched_equals_single_and_grads():
    tower = make_tower()
    xs = [torch.randn(500, 2), torch.randn(500, 1), torch.randn(777, 1)]
    srs = [100.0, 100.0, 50.0]
    with torch.no_grad():
        together = tower(xs, srs)
        alone = [tower([x], [sr])[0] for x, sr in zip(xs, srs)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    tower.train()
    proj = TimeSeriesProjector(tower.config, 48)
    proj.init_weights()
    out = proj(torch.cat(tower(xs, srs)))
    assert out.shape == (sum(o.shape[0] for o in together), 48)
    out.square().mean().backward()
    assert tower.encoder_embed.conv.weight.grad.abs().sum() > 0
    assert "encoder_embed.pos_encoder.pe" in tower.state_dict()


def test_state_dict_names_follow_reference():
    names = set(make_tower(tiny_cfg(encoder_layers=1)).state_dict())
    for key in ["encoder_embed.conv.weight", "encoder_embed.transformer_encoder.layers.0.self_attn.in_proj_weight",
                "encoder_embed.transformer_encoder.layers.0.linear1.weight", "encoder_embed.pos_encoder.pe",
                "encoder.adapt_in.weight", "encoder.conv1.weight", "encoder.conv2.bias",
                "encoder.embed_positions.weight", "encoder.layers.0.self_attn.q_proj.bias",
                "encoder.layers.0.self_attn_layer_norm.weight", "encoder.layers.0.fc1.weight",
                "encoder.layers.0.final_layer_norm.bias", "encoder.layer_norm.weight", "encoder.adapt_out.weight"]:
        assert key in names, key
    assert "encoder.layers.0.self_attn.k_proj.bias" not in names


def test_full_size_config_shapes_on_meta():
    cfg = TimeSeriesConfig()
    with torch.device("meta"):
        tower = TimeSeriesTower(cfg)
    sd = tower.state_dict()
    assert sd["encoder.adapt_in.weight"].shape == (80, 256)
    assert sd["encoder.adapt_out.weight"].shape == (1024, 768)
    assert sd["encoder_embed.pos_encoder.pe"].shape == (20000, 1, 128)
    assert len(tower.encoder.layers) == 17


def ecg_path():
    return find_data(None, "timeseries/100.hea").with_suffix("")


def test_ecg_record_through_the_tower():
    values, fs = read_wfdb(ecg_path(), sampto=3600)  # 10 s of the two MIT-BIH leads
    assert values.shape == (3600, 2) and fs == 360.0
    x, sr = preprocess_series(values, fs)
    tower = make_tower()
    with torch.no_grad():
        (out,) = tower([x], [sr])
    assert out.shape == (series_num_tokens(3600, 360.0, tower.config), tower.config.output_dim) == (7, 64)
    assert torch.isfinite(out).all() and out.std() > 0


@pytest.mark.slow
def test_full_ecg_record_truncated_through_the_tower():
    values, fs = read_wfdb(ecg_path())
    assert values.shape == (650000, 2)
    x, sr = preprocess_series(values, fs)  # truncated to 240,000 samples
    assert x.shape == (240000, 2)
    tower = make_tower()
    with torch.no_grad():
        (out,) = tower([x], [sr])
    assert out.shape[0] == series_num_tokens(240000, 360.0, tower.config) == 441
    assert torch.isfinite(out).all()
