"""The Qwen3 decoder against transformers (the reference implementation), plus the
behaviours transformers does not have: packed documents (doc_ids) and our loss."""

import dataclasses

import pytest
import torch

from opens1.config import TextConfig, get_preset
from opens1.models.s1 import S1ForConditionalGeneration

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


def test_loss_and_aux_loss_match_transformers():
    hf, ours = hf_pair(small_text(True))
    ids = torch.randint(0, 97, (2, 10))
    labels = ids.clone()
    labels[:, :3] = -100
    hf.config.output_router_logits = True
    with torch.no_grad():
        ref = hf(ids, labels=labels, output_router_logits=True)
        got = ours(ids, labels=labels)
    torch.testing.assert_close(got.aux_loss, ref.aux_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert got.ce_loss < got.loss  # the aux term is added with router_aux_loss_coef


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
    loss = ours(packed, doc_ids=doc_ids, labels=labels).ce_loss
    logits = sep[0]
    ref = torch.nn.functional.cross_entropy(torch.cat([logits[:4], logits[5:11]]), torch.cat([a[0, 1:], b[0, 1:]]))
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)


def test_tiny_presets_train_step_and_gradients():
    for name in ("tiny", "tiny-dense", "debug"):
        cfg = get_preset(name).replace(vision=None, timeseries=None)
        torch.manual_seed(0)
        model = S1ForConditionalGeneration(cfg)
        ids = torch.randint(0, cfg.text.vocab_size, (2, 32))
        out = model(ids, labels=ids)
        out.loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        # a fresh model predicts roughly uniformly: CE near log(V)
        assert abs(out.ce_loss.item() - torch.log(torch.tensor(float(cfg.text.vocab_size))).item()) < 1.0


def test_gradient_checkpointing_same_gradients():
    _, ours = hf_pair(small_text(True))
    ours.train()
    ids = torch.randint(0, 97, (2, 8))
    ours(ids, labels=ids).loss.backward()
    g1 = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    ours.language_model.gradient_checkpointing = True
    ours(ids, labels=ids).loss.backward()
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


def test_linear_cross_entropy_gradients():
    from opens1.models.s1 import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (2, 5))
    target[0, 2] = -100
    extra = torch.randn(2, 5, 11, dtype=torch.float64)

    def ref_fn(h, w):
        logits = h @ w.t()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), target.reshape(-1), ignore_index=-100)
        return ce + (logits * extra).sum()  # a second loss on the logits must get its gradient too

    def ours_fn(h, w):
        ce, logits = linear_cross_entropy(h, w, target)
        return ce + (logits * extra).sum()

    torch.testing.assert_close(ours_fn(h, w), ref_fn(h, w))
    g1 = torch.autograd.grad(ours_fn(h, w), (h, w))
    g2 = torch.autograd.grad(ref_fn(h, w), (h, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda h, w: linear_cross_entropy(h, w, target)[0], (h, w))


def test_linear_cross_entropy_across_chunks():
    # more rows than one chunk, ignored targets scattered over chunks, and a no-grad call
    from opens1.models import s1

    torch.manual_seed(1)
    N = 2 * s1.CE_CHUNK + 37
    h = torch.randn(1, N, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 23, (1, N))
    target[torch.rand(1, N) < 0.3] = -100
    ce, logits = s1.linear_cross_entropy(h, w, target)
    ref_logits = h @ w.t()
    ref = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, 23), target.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(ce, ref)
    torch.testing.assert_close(logits, ref_logits)
    for a, b in zip(torch.autograd.grad(ce, (h, w)), torch.autograd.grad(ref, (h, w))):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(s1.linear_cross_entropy(h, w, target)[0], ref.detach())


def test_linear_cross_entropy_under_autocast():
    # bf16 autocast: the head's matmuls in bf16 like nn.Linear's, the loss in float32, and the
    # gradients reach the float32 weight; it must agree with the unfused bf16 computation
    from opens1.models import s1

    torch.manual_seed(2)
    N = s1.CE_CHUNK + 50  # two chunks: grad_W is summed across them
    h = torch.randn(1, N, 32, requires_grad=True)
    w = (0.1 * torch.randn(97, 32)).requires_grad_()
    target = torch.randint(0, 97, (1, N))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ce, logits = s1.linear_cross_entropy(h, w, target)
        ref_logits = h @ w.t()  # autocast: bf16
    ref = torch.nn.functional.cross_entropy(ref_logits.float().reshape(-1, 97), target.reshape(-1))
    assert ce.dtype == torch.float32 and logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(ce, ref, rtol=1e-3, atol=1e-3)
    ours, theirs = torch.autograd.grad(ce, (h, w)), torch.autograd.grad(ref, (h, w))
    for a, b in zip(ours, theirs):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-4)


def test_count_parameters_of_real_presets():
    from opens1.config import count_parameters

    mini = count_parameters("intern-s1-mini")
    assert abs(mini / 1e9 - 8.54) < 0.05  # Qwen3-8B (153216 vocab) + InternViT-300M + projector
    assert count_parameters("intern-s1-mini", active=True) == mini  # dense


@pytest.mark.slow
def test_count_parameters_intern_s1():
    from opens1.config import count_parameters

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
