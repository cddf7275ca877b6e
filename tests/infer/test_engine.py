"""The continuous-batching engine on a real (tiny, random) S1 model: batched
decoding gives the same tokens as one-at-a-time `generate`, requests join and
leave between steps, seeds are batch-independent, admission control refuses
what it cannot take, and cancellation frees a slot at once."""

import threading
import time

import pytest
import torch

from opens1.config import get_preset
import opens1.infer.logits as logits_mod
from opens1.infer.engine import CacheFull, Constraint, Engine, GenerationRequest, PromptTooLong, QueueFull
from opens1.infer.sampling import SamplingParams
from opens1.models.s1 import S1ForConditionalGeneration

# a hung server or engine must fail the test, not stall the suite
pytestmark = pytest.mark.timeout(120)

GREEDY = dict(temperature=0.0, top_k=0, top_p=1.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = get_preset("debug")
    cfg.vision = cfg.timeseries = None  # text only: the engine is about the decoder
    return S1ForConditionalGeneration(cfg).eval()


def _engine(model, **kw) -> Engine:
    kw.setdefault("max_seq_len", 128)
    return Engine(model, **kw)


def _tokens(events):
    return [e.token_id for e in events if e.token_id is not None]



def _in_threads(*fns) -> None:
    """Run each function in its own thread, all at once, and wait for all of them."""
    threads = [threading.Thread(target=f) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

def _wait(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_concurrent_greedy_matches_generate(model):
    prompts = [[5, 6, 7], list(range(1, 12)), [42], [9, 8, 7, 6, 5, 4], [100, 101], [3] * 20]
    engine = _engine(model, max_batch_size=4).start()
    results = {}

    def run(i, p):
        results[i] = engine.generate(p, SamplingParams(max_new_tokens=12, **GREEDY))

    try:
        threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(prompts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        engine.shutdown()
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), max_new_tokens=12)[0, len(p):].tolist()
        assert _tokens(results[i]) == ref, f"prompt {i}"
        assert results[i][-1].finish_reason == "length"
    # more requests than slots: some decode steps really ran several sequences at once
    assert engine.stats.max_running > 1
    assert engine.stats.prefills == len(prompts)


def test_queued_requests_join_running_batch(model):
    # submitted before the loop starts, all are admitted together and decoded as one batch
    engine = _engine(model, max_batch_size=8)
    done = []
    for p in ([1, 2], [3, 4, 5], [6]):
        engine.submit(GenerationRequest(p, SamplingParams(max_new_tokens=5, **GREEDY), done.append))
    engine.start()
    try:
        assert _wait(lambda: sum(e.finish_reason is not None for e in done) == 3)
    finally:
        engine.shutdown()
    assert engine.stats.max_running == 3
    assert engine.stats.steps == 4  # 5 tokens: one from prefill, four batched decode steps
    assert engine.stats.prefills == 3 and engine.stats.prefill_forwards == 1  # one padded prefill


def test_batched_prefill_matches_generate(model):
    # prompts of different lengths, prefilled together (left padded), then decoded together
    prompts = [[5], list(range(1, 30)), [7, 8, 9], list(range(40, 52))]
    engine = _engine(model, max_batch_size=4)
    events = {i: [] for i in range(len(prompts))}
    for i, p in enumerate(prompts):
        engine.submit(GenerationRequest(p, SamplingParams(max_new_tokens=10, **GREEDY), events[i].append))
    engine.start()
    try:
        assert _wait(lambda: all(e and e[-1].finish_reason for e in events.values()))
    finally:
        engine.shutdown()
    assert engine.stats.prefill_forwards == 1
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), max_new_tokens=10)[0, len(p):].tolist()
        assert _tokens(events[i]) == ref, f"prompt {i}"


def test_prefill_groups_respect_slot_room(model):
    engine = _engine(model, max_batch_size=4, prefill_tokens=64)
    mk = lambda n, max_tokens: GenerationRequest([1] * n, SamplingParams(max_new_tokens=max_tokens), lambda e: None)
    a, b, c, d, e = mk(10, 5), mk(20, 5), mk(5, 120), mk(30, 5), mk(40, 5)
    groups = [[len(r.prompt_ids) for r in g] for g in engine._prefill_groups([a, b, c, d, e])]
    # c cannot be padded to 20 (20 + 120 > 128 slots), nor d join c (30 + 120 > 128);
    # d and e would pad to 2 x 40 = 80 tokens, more than prefill_tokens
    assert groups == [[10, 20], [5], [30], [40]]


def test_seeded_sampling_is_batch_independent(model):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=50, seed=1234)
    engine = _engine(model, max_batch_size=4).start()
    try:
        alone = _tokens(engine.generate([7, 7, 7], params))
        # the same request again, this time next to other sampled requests
        others = [GenerationRequest([1, 2, 3, 4], SamplingParams(max_new_tokens=30, temperature=1.0), lambda e: None) for _ in range(3)]
        for r in others:
            engine.submit(r)
        crowded = _tokens(engine.generate([7, 7, 7], params))
    finally:
        engine.shutdown()
    assert alone == crowded
    assert len(alone) == 10


def test_eos_stops_and_ignore_eos_runs_to_length(model):
    engine = _engine(model).start()
    try:
        first = _tokens(engine.generate([11, 12, 13], SamplingParams(max_new_tokens=8, **GREEDY)))
        eos = first[2]  # pretend the third greedy token is the end of turn
        engine.eos_token_ids = (eos,)
        stopped = engine.generate([11, 12, 13], SamplingParams(max_new_tokens=8, **GREEDY))
        ignored = engine.generate([11, 12, 13], SamplingParams(max_new_tokens=8, ignore_eos=True, **GREEDY))
    finally:
        engine.shutdown()
    assert _tokens(stopped) == first[:3] and stopped[-1].finish_reason == "stop"
    assert _tokens(ignored) == first and ignored[-1].finish_reason == "length"


def test_logprobs_are_normalised_and_ranked(model):
    engine = _engine(model).start()
    try:
        events = engine.generate([1, 2, 3], SamplingParams(max_new_tokens=4, logprobs=5, **GREEDY))
    finally:
        engine.shutdown()
    for ev in events:
        values = [lp for _, lp in ev.top_logprobs]
        assert values == sorted(values, reverse=True) and len(values) == 5
        assert ev.logprob == pytest.approx(values[0])  # greedy picks the most likely token
        assert ev.token_id == ev.top_logprobs[0][0]
        assert all(v <= 0 for v in values)


def test_cancel_frees_the_slot(model):
    engine = _engine(model, max_batch_size=1).start()
    events = []
    try:
        req = engine.submit(GenerationRequest([1, 2, 3], SamplingParams(max_new_tokens=100, ignore_eos=True, **GREEDY), events.append))
        assert _wait(lambda: len(events) >= 3)
        engine.cancel(req)
        assert _wait(lambda: engine.load()["running"] == 0)
        assert events[-1].finish_reason == "cancelled"
        assert len(events) < 100
        # the freed slot serves the next request
        after = engine.generate([4, 5], SamplingParams(max_new_tokens=3, **GREEDY))
    finally:
        engine.shutdown()
    assert len(_tokens(after)) == 3
    assert engine.load()["reserved_tokens"] == 0


def test_admission_control(model):
    engine = _engine(model, max_batch_size=1, max_queue=2, cache_budget_tokens=100)
    params = SamplingParams(max_new_tokens=10, **GREEDY)
    sink = []
    with pytest.raises(PromptTooLong, match="context"):
        engine.submit(GenerationRequest(list(range(130)), params, sink.append))
    with pytest.raises(PromptTooLong, match="exceeds the context"):
        engine.submit(GenerationRequest([1] * 100, SamplingParams(max_new_tokens=50), sink.append))
    # a seed torch cannot take is a plain ValueError, not a context error
    for seed in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match="seed") as e:
            engine.submit(GenerationRequest([1], SamplingParams(max_new_tokens=2, seed=seed), sink.append))
        assert not isinstance(e.value, PromptTooLong)
    # not started: requests wait in the queue
    engine.submit(GenerationRequest([1] * 30, params, sink.append))  # reserves 40 tokens
    with pytest.raises(CacheFull):
        engine.submit(GenerationRequest([1] * 60, params, sink.append))  # 40 + 70 > 100
    engine.submit(GenerationRequest([1] * 5, params, sink.append))
    with pytest.raises(QueueFull):
        engine.submit(GenerationRequest([1], params, sink.append))
    engine.start()
    try:
        assert _wait(lambda: sum(e.finish_reason is not None for e in sink) == 2)
    finally:
        engine.shutdown()
    assert engine.load()["reserved_tokens"] == 0


def test_bad_multimodal_input_fails_only_that_request(model):
    engine = _engine(model, max_batch_size=2).start()
    try:
        # the text-only model has no vision tower: prefill raises, the request errors out
        bad = engine.generate([1, 2], SamplingParams(max_new_tokens=3, **GREEDY), pixel_values=torch.zeros(1, 3, 56, 56))
        good = engine.generate([1, 2], SamplingParams(max_new_tokens=3, **GREEDY))
    finally:
        engine.shutdown()
    assert bad[-1].finish_reason == "error" and "vision" in bad[-1].error
    assert len(_tokens(good)) == 3 and engine.load()["free_slots"] == 2


def _run_together(engine, prompts_params) -> list[list]:
    """Submit all before starting, so they are prefilled and decoded in the same batches."""
    events = [[] for _ in prompts_params]
    for ev, (p, params) in zip(events, prompts_params):
        engine.submit(GenerationRequest(p, params, ev.append))
    engine.start()
    try:
        assert _wait(lambda: all(e and e[-1].finish_reason for e in events), 60)
    finally:
        engine.shutdown()
    return events


def test_top_k_past_int64_is_every_token(model):
    # top_k >= 2^63 overflowed int64 inside the engine loop and failed every running request
    huge = SamplingParams(max_new_tokens=6, temperature=1.0, top_k=2**63, seed=5)
    off = huge.replace(top_k=0)
    greedy = SamplingParams(max_new_tokens=6, **GREEDY)
    events = _run_together(_engine(model, max_batch_size=3), [([3, 4], huge), ([3, 4], off), ([9, 9, 9], greedy)])
    assert [e[-1].finish_reason for e in events] == ["length"] * 3
    assert _tokens(events[0]) == _tokens(events[1])  # past the vocabulary means off
    assert _tokens(events[2]) == model.generate(torch.tensor([[9, 9, 9]]), max_new_tokens=6)[0, 3:].tolist()


def test_sampling_failure_fails_only_that_request(model, monkeypatch):
    bad = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=7)
    draw = logits_mod._draw

    def failing_draw(logits, params, generator):
        if any(p is bad for p in params):
            raise RuntimeError("injected sampling failure")
        return draw(logits, params, generator)

    monkeypatch.setattr(logits_mod, "_draw", failing_draw)
    greedy = SamplingParams(max_new_tokens=8, **GREEDY)
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=7, seed=3)
    engine = _engine(model, max_batch_size=4)
    events = _run_together(engine, [([5, 6, 7], greedy), ([1, 2], bad), ([8, 8], greedy), ([4], sampled)])
    assert events[1][-1].finish_reason == "error" and "injected" in events[1][-1].error
    assert _tokens(events[1]) == []
    for i, p in ((0, [5, 6, 7]), (2, [8, 8])):  # the batch-mates carry on, with the same tokens as alone
        assert _tokens(events[i]) == model.generate(torch.tensor([p]), max_new_tokens=8)[0, len(p):].tolist()
        assert events[i][-1].finish_reason == "length"
    assert len(_tokens(events[3])) == 8 and events[3][-1].finish_reason == "length"
    assert engine.load()["reserved_tokens"] == 0


def test_failure_in_a_later_decode_step_fails_only_that_request(model, monkeypatch):
    # the request fails at its third token, in a batched decode step with the others running
    bad = SamplingParams(max_new_tokens=8, temperature=1.0, top_k=5)
    calls = {"n": 0}
    draw = logits_mod._draw

    def failing_draw(logits, params, generator):
        if any(p is bad for p in params):
            calls["n"] += 1
            if calls["n"] >= 3:
                raise RuntimeError("injected at a decode step")
        return draw(logits, params, generator)

    monkeypatch.setattr(logits_mod, "_draw", failing_draw)
    greedy = SamplingParams(max_new_tokens=8, **GREEDY)
    events = _run_together(_engine(model, max_batch_size=2), [([5, 6, 7], greedy), ([1, 2], bad)])
    assert events[1][-1].finish_reason == "error" and len(_tokens(events[1])) == 2
    assert _tokens(events[0]) == model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=8)[0, 3:].tolist()


def test_penalties_match_generate_and_leave_other_rows_alone(model):
    from opens1.infer.generate import generate

    pen = SamplingParams(max_new_tokens=10, repetition_penalty=1.5, presence_penalty=1.0, frequency_penalty=0.5, **GREEDY)
    plain = SamplingParams(max_new_tokens=10, **GREEDY)
    engine = _engine(model, max_batch_size=4).start()
    events = {}
    try:
        _in_threads(*[lambda k=k, p=p, s=s: events.__setitem__(k, engine.generate(p, s))
                      for k, (p, s) in enumerate([([5, 6, 7, 5], pen), ([8, 9], plain), ([5, 6, 7, 5], plain)])])
    finally:
        engine.shutdown()
    assert _tokens(events[0]) == generate(model, torch.tensor([[5, 6, 7, 5]]), pen)[0, 4:].tolist()
    assert _tokens(events[1]) == model.generate(torch.tensor([[8, 9]]), max_new_tokens=10)[0, 2:].tolist()
    assert _tokens(events[2]) == model.generate(torch.tensor([[5, 6, 7, 5]]), max_new_tokens=10)[0, 4:].tolist()
    assert _tokens(events[0]) != _tokens(events[2])


class _Allowed(Constraint):
    """Allows the ids of `script` one after the other (then anything); records what it saw."""

    def __init__(self, script, fail_at=None):
        self.script, self.fail_at, self.seen = script, fail_at, []

    def mask(self, V):
        k = len(self.seen)
        if k == self.fail_at:
            raise RuntimeError("grammar error")
        if k >= len(self.script):
            return None
        m = torch.zeros(V, dtype=torch.bool)
        m[self.script[k]] = True
        return m

    def accept(self, tok):
        self.seen.append(tok)


def test_constraints_mask_their_row_only_and_fail_alone(model):
    finished = []
    engine = _engine(model, max_batch_size=4, on_finish=lambda r, why: finished.append((r.id, why))).start()
    out = {}

    def run(k, c):
        done = threading.Event()
        evs = []
        req = GenerationRequest([5, 6, 7], SamplingParams(max_new_tokens=6, temperature=1.0),
                                lambda e: (evs.append(e), e.finish_reason and done.set()), constraint=c)
        engine.submit(req)
        done.wait(30)
        out[k] = (req, evs)

    forced, broken = _Allowed([11, 12, 13, 14, 15, 16]), _Allowed([11, 12, 13], fail_at=2)
    try:
        _in_threads(*[lambda a=a: run(*a) for a in ((0, forced), (1, broken), (2, None))])
    finally:
        engine.shutdown()
    assert _tokens(out[0][1]) == [11, 12, 13, 14, 15, 16] == forced.seen
    assert out[1][1][-1].finish_reason == "error" and "grammar error" in out[1][1][-1].error
    assert _tokens(out[1][1]) == [11, 12]
    assert out[2][1][-1].finish_reason == "length" and len(_tokens(out[2][1])) == 6
    assert sorted(why for _, why in finished) == ["error", "length", "length"]
    assert engine.stats.prompt_tokens == 9
