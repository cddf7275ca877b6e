"""KVCache: incremental decoding equals a full forward, per row and batched, with
left padding and with slot-based (continuous batching) use."""

import pytest
import torch

from opens1.config import TextConfig, get_preset
from opens1.infer.kv_cache import KVCache
from opens1.models.s1 import S1ForConditionalGeneration


@pytest.fixture(scope="module")
def model():
    t = TextConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8, rope_theta=10000.0, max_position_embeddings=128,
                   num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
    torch.manual_seed(0)
    return S1ForConditionalGeneration(get_preset("debug").replace(text=t, vision=None, timeseries=None)).eval()


def full_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_incremental_equals_full_forward(model):
    ids = torch.randint(0, 61, (2, 12))
    ref = full_logits(model, ids)
    cache = KVCache.for_model(model, 2, 16)
    with torch.no_grad():
        out = [model(ids[:, :5], kv_cache=cache).logits]
        for t in range(5, 12):
            out.append(model(ids[:, t:t + 1], kv_cache=cache).logits)
    torch.testing.assert_close(torch.cat(out, 1), ref, atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [12, 12]


def test_left_padding_equals_unpadded(model):
    a = torch.randint(0, 61, (1, 9))
    b = torch.randint(0, 61, (1, 5))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    am = torch.ones_like(ids)
    am[1, :4] = 0
    cache = KVCache.for_model(model, 2, 12)
    nxt = torch.randint(0, 61, (2, 1))
    with torch.no_grad():
        model(ids, attention_mask=am, kv_cache=cache)
        step = model(nxt, kv_cache=cache).logits
    torch.testing.assert_close(step[0], full_logits(model, torch.cat([a, nxt[:1]], 1))[0, -1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1], full_logits(model, torch.cat([b, nxt[1:]], 1))[0, -1:], atol=1e-5, rtol=1e-5)


def test_slot_based_rows(model):
    """Continuous batching: prefill slots one at a time, then decode both slots at
    different lengths in one call."""
    cache = KVCache.for_model(model, 3, 20)
    p0, p2 = torch.randint(0, 61, (1, 7)), torch.randint(0, 61, (1, 3))
    with torch.no_grad():
        model(p0, kv_cache=cache, cache_rows=torch.tensor([0]))
        model(p2, kv_cache=cache, cache_rows=torch.tensor([2]))
        nxt = torch.randint(0, 61, (2, 1))
        step = model(nxt, kv_cache=cache, cache_rows=torch.tensor([2, 0])).logits  # any order
    assert cache.lengths.tolist() == [8, 0, 4]
    torch.testing.assert_close(step[1], full_logits(model, torch.cat([p0, nxt[1:]], 1))[0, -1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[0], full_logits(model, torch.cat([p2, nxt[:1]], 1))[0, -1:], atol=1e-5, rtol=1e-5)
    # free slot 0 and reuse it for a new request
    cache.reset(rows=[0])
    p1 = torch.randint(0, 61, (1, 4))
    with torch.no_grad():
        got = model(p1, kv_cache=cache, cache_rows=torch.tensor([0])).logits
    torch.testing.assert_close(got, full_logits(model, p1), atol=1e-5, rtol=1e-5)


def test_overflow_is_an_error(model):
    cache = KVCache.for_model(model, 1, 4)
    with pytest.raises(ValueError, match="overflow"):
        with torch.no_grad():
            model(torch.randint(0, 61, (1, 5)), kv_cache=cache)


def test_batched_generate_equals_single(model):
    a, b = torch.randint(1, 61, (1, 8)), torch.randint(1, 61, (1, 3))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 5, dtype=torch.long), b], 1)])
    am = torch.ones_like(ids)
    am[1, :5] = 0
    batched = model.generate(ids, attention_mask=am, max_new_tokens=6)
    assert torch.equal(batched[0, 8:], model.generate(a, max_new_tokens=6)[0, 8:])
    assert torch.equal(batched[1, 8:], model.generate(b, max_new_tokens=6)[0, 3:])


def test_generate_stops_at_eos_and_pads(model):
    ids = torch.randint(0, 61, (2, 5))
    free = model.generate(ids, max_new_tokens=6)
    eos = int(free[0, 6])  # the 2nd token row 0 would generate
    out = model.generate(ids, max_new_tokens=6, eos_token_id=[eos], pad_token_id=60)
    assert out[0, 6] == eos and (out[0, 7:] == 60).all()
    with pytest.raises(ValueError, match="left padding"):
        model.generate(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0], [1] * 5]))


def test_sampled_generate_is_reproducible(model):
    ids = torch.randint(0, 61, (2, 4))
    g = lambda: torch.Generator().manual_seed(7)
    a = model.generate(ids, max_new_tokens=8, temperature=1.0, top_p=0.9, generator=g())
    b = model.generate(ids, max_new_tokens=8, temperature=1.0, top_p=0.9, generator=g())
    assert torch.equal(a, b) and a.shape == (2, 12)


def test_generate_respects_vocab_limit(model):
    ids = torch.randint(0, 61, (2, 4))
    out = model.generate(ids, max_new_tokens=6, vocab_limit=10)
    assert (out[:, 4:] < 10).all()
