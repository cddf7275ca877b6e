"""Batched sampling: greedy, filters, per-row knobs, reproducibility, and the
sampled distribution."""

import pytest
import torch

from opens1.infer.sampling import sample


def test_greedy_and_degenerate_filters_are_argmax():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    best = logits.argmax(-1)
    assert torch.equal(sample(logits, temperature=0.0), best)
    assert torch.equal(sample(logits, temperature=1.0, top_k=1), best)
    assert torch.equal(sample(logits, temperature=1.0, top_p=1e-6), best)
    assert torch.equal(sample(logits, temperature=1.0, min_p=1.0), best)


def test_top_k_and_min_p_restrict_support():
    torch.manual_seed(0)
    logits = torch.randn(1, 20).expand(2000, 20)
    top3 = set(logits[0].topk(3).indices.tolist())
    drawn = sample(logits, temperature=1.0, top_k=3)
    assert set(drawn.tolist()) <= top3 and len(set(drawn.tolist())) == 3
    p = logits[0].softmax(-1)
    allowed = set((p >= 0.5 * p.max()).nonzero().flatten().tolist())
    assert set(sample(logits, temperature=1.0, min_p=0.5).tolist()) <= allowed


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(3000, 4)
    drawn = sample(logits, temperature=1.0, top_p=0.7)  # nucleus {0, 1}: 0.5 < 0.7 <= 0.8
    assert set(drawn.tolist()) == {0, 1}
    frac0 = (drawn == 0).float().mean().item()
    assert abs(frac0 - 0.5 / 0.8) < 0.05  # renormalised inside the nucleus


def test_distribution_at_temperature():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(5000, 3)
    drawn = sample(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(drawn, minlength=3).float() / 5000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_per_row_knobs_and_generator():
    torch.manual_seed(0)
    logits = torch.randn(3, 40)
    temp = torch.tensor([0.0, 1.0, 1.0])
    k = torch.tensor([0, 1, 5])
    a = sample(logits, temperature=temp, top_k=k, generator=torch.Generator().manual_seed(3))
    b = sample(logits, temperature=temp, top_k=k, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a[0] == logits[0].argmax() and a[1] == logits[1].argmax()  # greedy row, top-1 row
    assert a[2] in logits[2].topk(5).indices


def test_bad_input():
    with pytest.raises(ValueError, match="logits"):
        sample(torch.randn(5), temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        sample(torch.randn(2, 5), temperature=torch.tensor([1.0, -1.0]))


def test_inverse_transform_draw_matches_probabilities():
    from opens1.infer.sampling import draw

    p = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0])
    g = torch.Generator().manual_seed(0)
    idx = draw(p.expand(100_000, 5), g)
    freq = torch.bincount(idx, minlength=5).float() / idx.numel()
    assert freq[1] == 0 and freq[4] == 0  # zero-probability entries, also the last one, never drawn
    torch.testing.assert_close(freq, p, atol=0.006, rtol=0)  # ~4 standard errors at n = 100k
    # unnormalised rows work (u is scaled by the row total); one-hot rows are deterministic
    assert draw(torch.tensor([[0.0, 0.0, 2.0], [5.0, 0.0, 0.0]]), g).tolist() == [2, 0]
    a = draw(p.expand(8, 5), torch.Generator().manual_seed(1))
    assert torch.equal(a, draw(p.expand(8, 5), torch.Generator().manual_seed(1)))


def test_penalties_match_hand_computed_logits():
    from opens1.infer.sampling import apply_penalties, token_counts

    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0]])
    prompt = token_counts([[0, 1]], 5) > 0  # ids 0 and 1 in the prompt
    out = token_counts([[2, 2, 1]], 5)  # id 2 twice and id 1 once in the output
    got = apply_penalties(logits, prompt, out, repetition=2.0, presence=0.5, frequency=0.25)
    # repetition over prompt + output (0, 1, 2): positive logits / 2, negative * 2; then
    # frequency 0.25 x count and presence 0.5 over the output only (1, 2)
    want = torch.tensor([[2.0 / 2, -1.0 * 2 - 0.25 * 1 - 0.5, 0.5 / 2 - 0.25 * 2 - 0.5, 3.0, -2.0]])
    torch.testing.assert_close(got, want)
    # off values change nothing; per-row knobs
    torch.testing.assert_close(apply_penalties(logits, prompt, out), logits)
    two = apply_penalties(logits.expand(2, 5), prompt.expand(2, 5), out.expand(2, 5),
                          repetition=torch.tensor([1.0, 2.0]), presence=torch.tensor([0.0, 0.5]),
                          frequency=torch.tensor([0.0, 0.25]))
    torch.testing.assert_close(two, torch.cat([logits, want]))


def test_penalty_values_are_checked():
    from opens1.infer.sampling import SamplingParams

    assert not SamplingParams().penalized and SamplingParams(presence_penalty=0.1).penalized
    for bad in (dict(repetition_penalty=0.0), dict(presence_penalty=2.5), dict(frequency_penalty=-3.0)):
        with pytest.raises(ValueError, match="penalt"):
            SamplingParams(**bad)
