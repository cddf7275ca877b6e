"""infer/generate.py: compiled decode (the model's own forward through torch.compile over a
static cache) gives the same logits and tokens as eager decoding, with left padding, MoE
and dense layers, eos handling and sampling. Marked slow: each test compiles."""

import pytest
import torch

import opens1
from opens1.config import TextConfig, get_preset
from opens1.infer.generate import cache_length, compiled_decode_step, decode_step, generate
from opens1.infer.kv_cache import KVCache
from opens1.infer.sampling import SamplingParams
from opens1.models.s1 import S1ForConditionalGeneration

pytestmark = pytest.mark.slow


def _model(**kw):
    # layer 0 dense, layer 1 MoE: both kinds of layer run in the compiled step
    t = TextConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8, rope_theta=10000.0, max_position_embeddings=128,
                   num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, mlp_only_layers=[0], **kw)
    torch.manual_seed(0)
    return S1ForConditionalGeneration(get_preset("debug").replace(text=t, vision=None, timeseries=None)).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def test_cache_length_buckets():
    assert [cache_length(n) for n in (1, 100, 128, 129, 300)] == [128, 128, 128, 256, 512]


def test_compiled_step_logits_match_eager(model):
    # a left-padded batch: row 1 starts with 3 pad slots, so positions and masks differ per row
    ids = torch.randint(1, 61, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    steps = torch.randint(1, 61, (2, 4))
    eager_cache = KVCache.for_model(model, 2, 16)
    comp_cache = KVCache.for_model(model, 2, 128, static=True)
    step = compiled_decode_step()
    with torch.inference_mode():
        model(ids, attention_mask=mask, kv_cache=eager_cache)
        model(ids, attention_mask=mask, kv_cache=comp_cache)
        for t in range(steps.shape[1]):
            ref = decode_step(model, eager_cache, steps[:, t])
            got = step(model, comp_cache, steps[:, t])
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert comp_cache.lengths.tolist() == eager_cache.lengths.tolist() == [11, 11]


def test_generate_compile_same_tokens(model):
    ids = torch.randint(1, 61, (2, 6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kw = dict(max_new_tokens=12, attention_mask=mask, eos_token_id=[7, 9], pad_token_id=0)
    eager = model.generate(ids, **kw)
    compiled = model.generate(ids, compile=True, **kw)
    assert torch.equal(compiled, eager)
    # sampling with a fixed generator draws the same tokens too
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = model.generate(ids, temperature=0.8, top_k=20, generator=g1, **kw)
    b = model.generate(ids, temperature=0.8, top_k=20, generator=g2, compile=True, **kw)
    assert torch.equal(a, b)


def test_compiled_step_sees_weight_updates(model):
    # RL updates weights in place between generations: the compiled code must read them afresh
    ids = torch.randint(1, 61, (1, 5))
    before = model.generate(ids, max_new_tokens=6, compile=True)
    w = model.lm_head.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.copy_(torch.randn_like(w))
        assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), before)


def test_static_cache_has_no_slot_rows(model):
    cache = KVCache.for_model(model, 2, 128, static=True)
    with torch.inference_mode(), pytest.raises(ValueError, match="static"):
        model(torch.randint(1, 61, (1, 3)), kv_cache=cache, cache_rows=torch.tensor([0]))
    with pytest.raises(ValueError, match="whole"):
        cache.reset(rows=[0])


def test_seeded_sampling_params_and_dynamic_rope_refusal(model):
    ids = torch.randint(1, 61, (2, 4))
    s = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11)
    assert torch.equal(generate(model, ids, s), generate(model, ids, s))  # the seed makes the generator
    dyn = _model(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="dynamic NTK"):
        dyn.generate(ids, max_new_tokens=2, compile=True)


def test_same_batch_and_bucket_reuse_the_compiled_step(model):
    from torch._dynamo.utils import counters

    model.generate(torch.randint(1, 61, (3, 5)), max_new_tokens=4, compile=True)
    before = counters["stats"]["unique_graphs"]
    # another prompt length and generation length in the same cache bucket: no new graph
    model.generate(torch.randint(1, 61, (3, 9)), max_new_tokens=7, compile=True)
    assert counters["stats"]["unique_graphs"] == before


def test_generate_never_samples_past_the_model_vocab_limit(model):
    # a padded vocabulary: ids >= the tokenizer's size must never be drawn, even at a high temperature
    ids = torch.randint(1, 50, (8, 5))
    s = SamplingParams(max_new_tokens=40, temperature=1.5)
    try:
        model.vocab_limit = 50  # what load_model sets from the checkpoint's tokenizer
        out = generate(model, ids, s, generator=torch.Generator().manual_seed(0))
        assert int(out[:, 5:].max()) < 50
        greedy = generate(model, ids, SamplingParams(max_new_tokens=6))
    finally:
        del model.vocab_limit
    free = generate(model, ids, SamplingParams(max_new_tokens=40, temperature=1.5), generator=torch.Generator().manual_seed(0))
    assert int(free[:, 5:].max()) >= 50  # without the limit, the padding ids are drawn (random weights)
    # greedy is unchanged where the argmax lies inside the tokenizer, as for a trained model
    logits = model(ids).logits[:, -1]
    inside = logits.argmax(-1) < 50
    assert torch.equal(greedy[inside, 5], logits.argmax(-1)[inside])


def test_generate_applies_penalties(model):
    # a huge frequency penalty makes greedy decoding never repeat an output token
    ids = torch.tensor([[3, 4, 5]])
    out = generate(model, ids, SamplingParams(max_new_tokens=20, frequency_penalty=2.0, presence_penalty=2.0))
    plain = generate(model, ids, SamplingParams(max_new_tokens=20))
    assert len(set(plain[0, 3:].tolist())) < 20  # random weights repeat themselves
    # step by step with the hand-applied penalty: the same tokens
    from opens1.infer.sampling import apply_penalties, token_counts

    seq = ids[0].tolist()
    for _ in range(20):
        logits = model(torch.tensor([seq])).logits[:, -1]
        logits = apply_penalties(logits, token_counts([ids[0].tolist()], 61) > 0, token_counts([seq[3:]], 61),
                                 presence=2.0, frequency=2.0)
        seq.append(int(logits.argmax()))
    assert out[0].tolist() == seq


def test_load_model_sets_the_tokenizer_size(tmp_path):
    # a checkpoint with its tokenizer (vocabulary padded to a multiple of 64, random weights):
    # model.generate at temperature 1.5 never returns an id the tokenizer cannot decode
    from opens1 import load_model
    from opens1.models.checkpoint.load import tokenizer_size
    from opens1.serve.load import load_for_serving

    m, tok, _ = load_for_serving("tiny-dense")
    assert m.config.text.vocab_size > len(tok)
    opens1.save_model(m, tmp_path)
    assert tokenizer_size(tmp_path) is None  # no tokenizer yet
    tok.save_pretrained(tmp_path)
    assert tokenizer_size(tmp_path) == len(tok)
    loaded = load_model(tmp_path)
    assert loaded.vocab_limit == len(tok)
    ids = torch.tensor([tok.encode("The molecule")] * 4)
    out = loaded.generate(ids, max_new_tokens=30, temperature=1.5, generator=torch.Generator().manual_seed(0))
    tok.decode(out[:, ids.shape[1]:].flatten().tolist())  # raises on an id past the tokenizer
    assert int(out.max()) < len(tok)
