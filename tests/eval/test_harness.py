"""Evaluation against a fake OpenAI-compatible endpoint started in-test on 127.0.0.1."""

import pytest

from opens1.envs import get_env
from opens1.eval.backends import EVAL_SAMPLING, EndpointBackend
from opens1.eval.harness import generate_records, rescore_records, resolve_tasks, summarize
from opens1.eval.report import to_markdown
from tests.eval import fake_endpoint
from tests.eval.fake_endpoint import TASKS

server = fake_endpoint.server  # the fake endpoint fixture, shared with tests/cli/test_eval.py


def test_endpoint_generation_scores_and_protocol(server):
    url, calls, book = server
    backend = EndpointBackend(url, model="fake")
    sampling = EVAL_SAMPLING.replace(temperature=0.8, top_k=50)
    records = generate_records(backend, TASKS, n_items=4, n_samples=3, sampling=sampling, model_name="fake")
    assert len(records) == 2 * 4 * 3
    body = calls[-1]
    assert body["temperature"] == 0.8 and body["top_p"] == 1.0 and body["top_k"] == 50
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    r0 = records[0]
    assert r0["generation"].startswith("<think>thinking about it</think>")  # reasoning re-joined
    assert r0["sampling"]["temperature"] == 0.8 and r0["template_hash"].startswith("endpoint:")
    assert all(r["score"] == 1.0 for r in records if r["sample"] == 0)
    # Expected mean from the fake server's rule, computed independently of the harness.
    summary = summarize(records)
    for task in TASKS:
        rs = [r for r in records if r["task"] == task]
        even = sum(len(r["case"]["prompt"]) % 2 == 0 for r in rs if r["sample"] == 0)
        expected = (4 + 2 * even) / 12
        t = summary["tasks"][task]
        assert t["mean"] == pytest.approx(expected)
        assert t["n_items"] == 4 and t["n_samples"] == 3 and t["pass@3"] == 1.0
        assert t["stderr"] >= 0
    assert "| logic/sorting | 4 | 3 |" in to_markdown(summary)


def test_rescore_applies_the_current_verifier(tmp_path):
    env = get_env("logic/arithmetic_chain")
    case = env.case(0, "heldout")
    rec = {"task": env.name, "case": {"id": case.id, "prompt": case.prompt, "reference": case.reference,
                                      "meta": case.meta},
           "sample": 0, "generation": f"Answer: {case.reference}", "score": 0.0, "reason": "old bug",
           "extracted": None, "sampling": {}, "template_hash": "t", "model": "m"}
    (new,) = rescore_records([rec])
    assert new["score"] == 1.0 and new["reason"] != "old bug"


def test_task_resolution_errors():
    assert resolve_tasks(["logic/*"]) == ["logic/arithmetic_chain", "logic/counting", "logic/sat",
                                          "logic/sorting", "logic/sudoku_mini"]
    with pytest.raises(ValueError, match="no task matches"):
        resolve_tasks(["astrology/*"])
    with pytest.raises(FileNotFoundError):
        resolve_tasks(["physics/scibench"])


# --- read-outs that a constant answer cannot pass ---------------------------------------------


def _cases(refs, env_name="logic/arithmetic_chain"):
    from opens1.envs import Case

    return [Case(f"t/{i}", "q", r, {"env": env_name}) for i, r in enumerate(refs)]


def test_answer_prior_is_the_best_constant_answer():
    from opens1.eval.harness import answer_entropy, answer_prior, constant_response, diff_stderr

    env = get_env("logic/arithmetic_chain")  # exact integers
    prior, answer = answer_prior(env, _cases(["3", "3", "3", "5", "7"]))
    assert prior == pytest.approx(0.6) and answer == "Answer: 3"
    # with a tolerance a value between two answers can beat the mode: 5% around 10.0 covers both
    gap = get_env("chem/qm9_gap")
    refs = ["10.0 eV", "10.4 eV", "9.6 eV", "20 eV", "20 eV"]
    prior, answer = answer_prior(gap, _cases(refs, "chem/qm9_gap"))
    assert prior == pytest.approx(0.6) and answer == "Answer: 10.0 eV"
    assert answer_entropy(_cases(["a", "b", "a", "b"])) == pytest.approx(1.0)
    assert answer_entropy(_cases(["a"] * 4)) == 0.0
    assert diff_stderr(0.5, 0.25, 400) == pytest.approx(((0.25 + 0.1875) / 400) ** 0.5)
    assert constant_response({"value": 2.5, "unit": "eV"}) == "Answer: 2.5 eV"


def test_summaries_carry_the_answer_prior():
    env = get_env("logic/arithmetic_chain")
    cases = env.cases(6, "heldout")
    records = [{"task": env.name, "case": {"id": c.id, "prompt": c.prompt, "reference": c.reference, "meta": c.meta},
                "sample": 0, "generation": f"Answer: {c.reference}", "score": 1.0} for c in cases]
    t = summarize(records)["tasks"][env.name]
    assert t["mean"] == 1.0 and 0 < t["prior"] < 1 and t["above_prior"] == pytest.approx(1 - t["prior"])
    assert "answer prior" in to_markdown(summarize(records))


def test_answer_cross_entropy_scores_only_the_answer_tokens():
    import math

    import opens1
    from opens1.eval.harness import _answer_span, answer_cross_entropy
    from opens1.speedrun import TINY_TOKENIZER, build_model

    tok = opens1.load_tokenizer(TINY_TOKENIZER)
    ids, n = _answer_span(tok, "Counting.\nAnswer: 12")
    assert tok.decode(ids[-n:]) == "12"
    ids, n = _answer_span(tok, "Answer: 4 Hz")
    assert tok.decode(ids[-n:]) == "4 Hz"
    model, proc = build_model("tiny", tok, 0)
    for name in ("chem/ring_count", "physics/signal_frequency"):  # text and time-series prompts
        env = get_env(name)
        cases = env.cases(3, "heldout")
        bits, n_items = answer_cross_entropy(model, tok, proc, env, cases, batch=2)
        # an untrained model spreads its probability: about log2(vocabulary) per answer token
        assert n_items == 3 and 0.5 * math.log2(len(tok)) < bits < 3 * math.log2(len(tok))
        assert model.training  # the training mode is restored
        # batched with right padding and one at a time agree
        singles = [answer_cross_entropy(model, tok, proc, env, [c])[0] for c in cases]
        assert bits == pytest.approx(sum(singles) / 3, rel=1e-4)
