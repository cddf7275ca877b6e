"""InternViT and the projector against transformers' InternVL (copied weights, float32)."""

import dataclasses

import pytest
import torch

from opens1.config import VisionConfig, get_preset
from opens1.models.vision import InternVisionModel, MultiModalProjector, pixel_shuffle
from opens1.train.parallelize import checkpoint_layers

transformers = pytest.importorskip("transformers")
from transformers.models.internvl import modeling_internvl as hf  # noqa: E402

# The two real variants: InternViT-6B style (Intern-S1) and InternViT-300M style (mini).
VARIANTS = {
    "rms_qknorm_nobias": dict(norm_type="rms_norm", use_qk_norm=True, attention_bias=False),
    "layernorm_bias": dict(norm_type="layer_norm", use_qk_norm=False, attention_bias=True),
}


def small_vcfg(**kw) -> VisionConfig:
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=56, patch_size=14)
    base.update(kw)
    return VisionConfig(**base)


def hf_vision_config(v: VisionConfig):
    return transformers.InternVLVisionConfig(
        hidden_size=v.hidden_size, num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
        intermediate_size=v.intermediate_size, image_size=[v.image_size, v.image_size],
        patch_size=[v.patch_size, v.patch_size], norm_type=v.norm_type, use_qk_norm=v.use_qk_norm,
        attention_bias=v.attention_bias, layer_norm_eps=v.layer_norm_eps, attn_implementation="eager",
    )


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (HF zero-inits CLS/positions; ones for norms would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_internvit_matches_transformers(variant):
    torch.manual_seed(0)
    vcfg = small_vcfg(**VARIANTS[variant])
    ref = hf.InternVLVisionModel(hf_vision_config(vcfg)).eval()
    randomize_(ref, 1)
    ours = InternVisionModel(vcfg).eval()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(3, 3, vcfg.image_size, vcfg.image_size)
    with torch.no_grad():
        want = ref(pixel_values=x).last_hidden_state[:, 1:]
        got = ours(x)
    assert got.shape == (3, vcfg.num_patches, vcfg.hidden_size)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_position_interpolation_matches_transformers():
    """Non-square, larger input: the bicubic position resize must equal HF's."""
    vcfg = small_vcfg(**VARIANTS["layernorm_bias"])
    ref = hf.InternVLVisionModel(hf_vision_config(vcfg)).eval()
    randomize_(ref, 2)
    ours = InternVisionModel(vcfg).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 84, 70)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(pixel_values=x).last_hidden_state[:, 1:], atol=1e-4, rtol=1e-4)


def test_pixel_shuffle_order_and_projector_matches_transformers():
    # Channel order: output (i, j) = input cells (2i,2j), (2i,2j+1), (2i+1,2j), (2i+1,2j+1).
    x = torch.randn(2, 4, 4, 3)
    y = pixel_shuffle(x, 0.5)
    assert y.shape == (2, 2, 2, 12)
    for i in range(2):
        for j in range(2):
            want = torch.cat([x[:, 2 * i, 2 * j], x[:, 2 * i, 2 * j + 1], x[:, 2 * i + 1, 2 * j], x[:, 2 * i + 1, 2 * j + 1]], -1)
            torch.testing.assert_close(y[:, i, j], want)

    # Whole image path (vision tower + shuffle + projector) against InternVLModel.get_image_features.
    vcfg = small_vcfg(**VARIANTS["rms_qknorm_nobias"])
    text = transformers.Qwen3Config(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, head_dim=24)
    cfg = transformers.InternVLConfig(vision_config=hf_vision_config(vcfg).to_dict(), text_config=text.to_dict())
    ref = hf.InternVLModel(cfg).eval()
    randomize_(ref, 3)
    tower, proj = InternVisionModel(vcfg).eval(), MultiModalProjector(vcfg, 48, 0.5).eval()
    sd = ref.state_dict()
    tower.load_state_dict({k[len("vision_tower."):]: v for k, v in sd.items() if k.startswith("vision_tower.")})
    proj.load_state_dict({k[len("multi_modal_projector."):]: v for k, v in sd.items() if k.startswith("multi_modal_projector.")})
    px = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=px).pooler_output
        got = proj(tower(px))
    assert got.shape == (2, vcfg.num_patches // 4, 48)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_448_tile_gives_256_tokens_and_init():
    # the real tile geometry on a 1-layer narrow tower: 32x32 patches -> 256 tokens
    vcfg = dataclasses.replace(get_preset("intern-s1").vision, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=32)
    tower, proj = InternVisionModel(vcfg), MultiModalProjector(vcfg, 16)
    tower.init_weights()
    proj.init_weights()
    with torch.no_grad():
        out = proj(tower(torch.randn(1, 3, 448, 448)))
    assert out.shape == (1, 256, 16) and torch.isfinite(out).all()
    assert torch.allclose(tower.encoder.layer[0].lambda_1, torch.full((32,), 0.1))


def test_bad_inputs_raise():
    tower = InternVisionModel(small_vcfg())
    with pytest.raises(ValueError, match="pixel_values"):
        tower(torch.randn(3, 56, 56))
    with pytest.raises(ValueError, match="norm_type"):
        InternVisionModel(small_vcfg(norm_type="batch_norm"))
    with pytest.raises(ValueError, match="square"):
        MultiModalProjector(small_vcfg(), 16)(torch.randn(1, 12, 32))


def test_gradients_flow_and_checkpointing_matches():
    vcfg = small_vcfg(**VARIANTS["rms_qknorm_nobias"])
    tower = InternVisionModel(vcfg)
    tower.init_weights()
    x = torch.randn(2, 3, 56, 56)
    tower.train()
    loss = tower(x).square().mean()
    loss.backward()
    g1 = tower.embeddings.patch_embeddings.projection.weight.grad.clone()
    tower.zero_grad()
    assert checkpoint_layers(list(tower.encoder.layer)) == vcfg.num_hidden_layers
    tower(x).square().mean().backward()
    torch.testing.assert_close(tower.embeddings.patch_embeddings.projection.weight.grad, g1)
    assert g1.abs().sum() > 0


def test_bfloat16_tower_tracks_float32():
    vcfg = small_vcfg(**VARIANTS["rms_qknorm_nobias"])
    tower = InternVisionModel(vcfg).eval()
    tower.init_weights(std=0.1)
    proj = MultiModalProjector(vcfg, 16).eval()
    proj.init_weights(std=0.1)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        want = proj(tower(x))
        tower.to(torch.bfloat16)
        proj.to(torch.bfloat16)
        got = proj(tower(x))  # pixel values are cast to the tower's dtype inside
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)
