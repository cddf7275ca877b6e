"""The Qwen3 decoder against transformers (the reference implementation), plus the
behaviours transformers does not have: packed documents (doc_ids), hidden states for the
fused loss (train/losses.py), and the model's training path through that loss."""

import dataclasses

import pytest
import torch

from opens1.config import TextConfig, get_preset
from opens1.models.s1 import S1ForConditionalGeneration, count_parameters
from opens1.train.losses import head_weight, lm_loss
from opens1.train.parallelize import apply_activation_checkpointing

transformers = pytest.importorskip("transformers")


def small_text(moe: bool, **kw) -> TextConfig:
    t = TextConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8, rope_theta=10000.0, max_position_embeddings=64,
                   bos_token_id=None, eos_token_id=None)
    if moe:
        t = dataclasses.replace(t, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, mlp_only_layers=[1])
    return dataclasses.replace(t, **kw)


def text_only(t: TextConfig):
    return get_preset("debug").replace(text=t, vision=None, timeseries=None)


def hf_pair(t: TextConfig, seed=0):
    """A random transformers model and our model with the same weights."""
    from opens1.models.checkpoint import convert_state_dict, text_config_to_hf

    torch.manual_seed(seed)
    d = text_config_to_hf(t)
    d.pop("architectures"), d.pop("model_type")
    if t.is_moe:
        hf = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**d))
    else:
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**d))
    hf.eval()
    ours = S1ForConditionalGeneration(text_only(t)).eval()
    ours.load_state_dict(convert_state_dict(hf.state_dict(), ours.config), strict=True)
    return hf, ours


@pytest.mark.parametrize("moe", [False, True])
def test_logits_match_transformers(moe):
    hf, ours = hf_pair(small_text(moe))
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        ref, got = hf(ids).logits, ours(ids).logits
    assert got.shape == (2, 11, 97)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8},
])
def test_rope_scaling_matches_transformers(scaling):
    # max_position_embeddings=16 < sequence length 24, so dynamic NTK actually rescales
    hf, ours = hf_pair(small_text(False, rope_scaling=scaling, max_position_embeddings=16))
    ids = torch.randint(0, 97, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_padding_mask_and_positions_match_transformers():
    hf, ours = hf_pair(small_text(True))
    ids = torch.randint(0, 97, (2, 9))
    am = torch.ones_like(ids)
    am[0, :4] = 0  # left padding
    pos = (am.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        ref = hf(ids, attention_mask=am, position_ids=pos).logits
        got = ours(ids, attention_mask=am).logits  # positions derived from the mask
    torch.testing.assert_close(got[am.bool()], ref[am.bool()], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(got).all()  # padding rows never produce NaN


def ce_loss(model, ids, labels, **kw):
    """The training loss path: hidden states, then the fused head + cross-entropy."""
    out = model(ids, return_hidden=True, output_router_logits=True, **kw)
    return lm_loss(out.hidden_states, head_weight(model), labels, kw.get("doc_ids")), out


def test_loss_and_aux_loss_match_transformers():
    hf, ours = hf_pair(small_text(True))
    ids = torch.randint(0, 97, (2, 10))
    labels = ids.clone()
    labels[:, :3] = -100
    hf.config.output_router_logits = True
    with torch.no_grad():
        ref = hf(ids, labels=labels, output_router_logits=True)
        ce, out = ce_loss(ours, ids, labels)
    assert out.logits is None and out.hidden_states.shape == (2, 10, 32)  # no head: the loss runs it
    torch.testing.assert_close(out.aux_loss, ref.aux_loss, atol=1e-5, rtol=1e-5)
    # transformers adds the aux term with router_aux_loss_coef; our Trainer weighs it the same way
    loss = ce + ours.config.text.router_aux_loss_coef * out.aux_loss
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_doc_ids_equal_separate_documents():
    _, ours = hf_pair(small_text(True))
    a, b = torch.randint(0, 97, (1, 5)), torch.randint(0, 97, (1, 7))
    packed = torch.cat([a, b], 1)
    doc_ids = torch.tensor([[0] * 5 + [1] * 7])
    with torch.no_grad():
        got = ours(packed, doc_ids=doc_ids).logits
        sep = torch.cat([ours(a).logits, ours(b).logits], 1)
    torch.testing.assert_close(got, sep, atol=1e-5, rtol=1e-5)
    # the loss never asks a document to predict the next one's first token
    labels = packed.clone()
    labels[0, 5] = -100  # what packing does: a document's first token is never a target
    with torch.no_grad():
        loss = ce_loss(ours, packed, labels, doc_ids=doc_ids)[0]
    logits = sep[0]
    ref = torch.nn.functional.cross_entropy(torch.cat([logits[:4], logits[5:11]]), torch.cat([a[0, 1:], b[0, 1:]]))
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)


def test_tiny_presets_train_step_and_gradients():
    for name in ("tiny", "tiny-dense", "debug"):
        cfg = get_preset(name).replace(vision=None, timeseries=None)
        torch.manual_seed(0)
        model = S1ForConditionalGeneration(cfg)
        ids = torch.randint(0, cfg.text.vocab_size, (2, 32))
        ce, out = ce_loss(model, ids, ids)
        (ce if out.aux_loss is None else ce + out.aux_loss).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        # a fresh model predicts roughly uniformly: CE near log(V)
        assert abs(ce.item() - torch.log(torch.tensor(float(cfg.text.vocab_size))).item()) < 1.0


def test_gradient_checkpointing_same_gradients():
    _, ours = hf_pair(small_text(True))
    ours.train()
    ids = torch.randint(0, 97, (2, 8))
    ce_loss(ours, ids, ids)[0].backward()
    g1 = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    assert apply_activation_checkpointing(ours) == ours.config.text.num_hidden_layers
    ce_loss(ours, ids, ids)[0].backward()
    for a, p in zip(g1, ours.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-5)


def test_tied_head_shares_embedding():
    cfg = text_only(small_text(False, tie_word_embeddings=True))
    model = S1ForConditionalGeneration(cfg)
    assert model.lm_head.weight is model.language_model.embed_tokens.weight


def test_splice_count_mismatch_is_a_clear_error():
    from opens1.models.s1 import _splice

    x = torch.zeros(1, 4, 8)
    ids = torch.tensor([[5, 7, 7, 1]])
    out = _splice(x, ids, 7, torch.ones(2, 8), "image")
    assert out[0, 1:3].eq(1).all() and out[0, 0].eq(0).all()
    with pytest.raises(ValueError, match="3 feature tokens but 2 placeholder"):
        _splice(x, ids, 7, torch.ones(3, 8), "image")


def test_count_parameters_of_real_presets():
    mini = count_parameters("intern-s1-mini")
    assert abs(mini / 1e9 - 8.54) < 0.05  # Qwen3-8B (153216 vocab) + InternViT-300M + projector
    assert count_parameters("intern-s1-mini", active=True) == mini  # dense


@pytest.mark.slow
def test_count_parameters_intern_s1():
    assert abs(count_parameters("intern-s1") / 1e9 - 240.7) < 0.1
    assert abs(count_parameters("intern-s1", active=True) / 1e9 - 27.8) < 0.1  # 22B LM + 6B ViT (paper: 28B)


def test_multimodal_forward_splices_image_and_series():
    """The tiny preset end to end: image tiles and a time series spliced into the prompt."""
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = S1ForConditionalGeneration(cfg).eval()
    img_id, ts_id = 7, 9
    cfg.image_token_id, cfg.ts_token_id = img_id, ts_id
    pixel_values = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    series = [torch.randn(400, 1)]
    with torch.no_grad():
        n_ts = model.ts_projector(model.ts_tower(series, [100.0])[0]).shape[0]
    n_img = 2 * cfg.image_tokens_per_tile
    ids = torch.tensor([[1] + [img_id] * n_img + [2] + [ts_id] * n_ts + [3, 4]])
    with torch.no_grad():
        out = model(ids, pixel_values=pixel_values, time_series=series, sampling_rates=[100.0])
        text_only = model(ids)
    assert out.logits.shape == (1, ids.shape[1], cfg.text.vocab_size)
    assert not torch.allclose(out.logits[0, -1], text_only.logits[0, -1])  # the features changed the answer
    gen = model.generate(ids, max_new_tokens=3, pixel_values=pixel_values, time_series=series, sampling_rates=[100.0])
    assert gen.shape == (1, ids.shape[1] + 3)
    with pytest.raises(ValueError, match="placeholder"):
        model(ids[:, 2:], pixel_values=pixel_values, time_series=series, sampling_rates=[100.0])
