"""Structured output: llguidance over OpenS1's token-bytes vocabulary, the reasoning budget,
and `response_format` through the API (the official `openai` client, random weights at
temperature 1, so every token the grammar allows is a candidate)."""

import json

import httpx
import jsonschema
import pytest

from opens1.serve import protocol as P
from opens1.serve.structured import GrammarVocab, Structured, json_grammar, response_schema

pytestmark = pytest.mark.timeout(180)

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "confidence": {"enum": [1, 2, 3]}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}
ASK = [{"role": "user", "content": "Is benzene aromatic? Answer in JSON."}]


@pytest.fixture(scope="module")
def vocab(tiny_state):
    return GrammarVocab(tiny_state.tokenizer, tiny_state.engine.eos_token_ids)


def test_vocabulary_is_the_tokenizers_bytes(vocab, tiny_state):
    tok = tiny_state.tokenizer
    assert vocab.n == len(tok)
    # llguidance decodes ids to exactly the bytes OpenS1 decodes them to, domain pieces included
    ids = tok.encode("Aspirin is CC(=O)OC1=CC=CC=C1C(=O)O, a protein MKTAYIAKQR, café")
    assert vocab.lltok.decode_bytes(ids) == tok.decode_bytes(ids)
    assert {d for i in ids if (d := tok.domain_of(i)) not in ("base",)} >= {"smiles"}


def test_grammar_allows_compact_json_only(vocab, tiny_state):
    tok = tiny_state.tokenizer
    m = vocab.matcher(json_grammar(SCHEMA, after_think=False))
    allowed = vocab.allowed(m)  # [n]: the tokenizer's ids (the engine disallows the padding past them)
    assert allowed.shape == (len(tok),)
    assert all(tok.decode([i]).startswith("{") for i in allowed.nonzero().flatten().tolist())
    # no control token, domain tag or end of turn where JSON text goes
    assert not allowed[sorted(tok.special_tokens.values())].any()
    assert m.validate_tokens(tok.encode('{"answer":"no","confidence":2}')) == len(tok.encode('{"answer":"no","confidence":2}'))
    spaced = tok.encode('{"answer": "no"')
    assert m.validate_tokens(spaced) < len(spaced)  # whitespace between tokens is refused
    assert m.consume_tokens(tok.encode('{"answer":"no","confidence":2}'))
    end = vocab.allowed(m).nonzero().flatten().tolist()
    assert end and set(end) <= set(tiny_state.engine.eos_token_ids)  # complete: only the end of the turn
    # after </think>, up to two newlines may come first (Intern-S1 writes them)
    m2 = vocab.matcher(json_grammar(SCHEMA, after_think=True))
    assert m2.consume_tokens(tok.encode('\n\n{"answer":"yes","confidence":1}'))


def test_bad_schemas_are_value_errors(vocab):
    with pytest.raises(ValueError):
        vocab.matcher(json_grammar({"type": "object", "properties": {"a": {"type": "nonsense"}}}, after_think=False))
    fmt = P.ResponseFormat.model_validate({"type": "json_object"})
    assert response_schema(fmt) == {"type": "object"}
    assert response_schema(P.ResponseFormat.model_validate(FORMAT)) == SCHEMA
    assert response_schema(P.ResponseFormat.model_validate({"type": "text"})) is None


def test_reasoning_budget_and_no_end_of_turn_while_thinking(vocab, tiny_state):
    tok = tiny_state.tokenizer
    close = tok.token_to_id("</think>")
    V = tiny_state.vocab_size
    c = Structured(vocab, vocab.matcher(json_grammar(SCHEMA, after_think=True)), thinking=True, budget=3, think_close_id=close)
    for t in (5, 6, 7):
        m = c.mask(V)
        assert not m[list(tiny_state.engine.eos_token_ids)].any() and m[close] and not m[len(tok):].any()
        c.accept(t)
    forced = c.mask(V)
    assert forced.nonzero().flatten().tolist() == [close]  # the budget is spent: </think> alone
    c.accept(close)
    assert c.mask(V)[tok.encode("{")[0]]  # the answer: the grammar
    # the budget alone (no response_format): free reasoning, then </think>
    b = Structured(None, None, thinking=True, budget=1, think_close_id=close)
    assert b.mask(V) is None
    b.accept(5)
    assert b.mask(V).nonzero().flatten().tolist() == [close]
    b.accept(close)
    assert b.mask(V) is None
    with pytest.raises(RuntimeError, match="constrained decoding"):
        c.accept(tok.encode("x")[0])  # a token the grammar refuses fails the request


@pytest.mark.parametrize("thinking", [True, False])
def test_json_schema_through_the_openai_client(client, thinking):
    r = client.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=256, temperature=1, n=2, response_format=FORMAT,
        extra_body={"chat_template_kwargs": {"enable_thinking": thinking}},
    )
    for c in r.choices:
        jsonschema.validate(json.loads(c.message.content), SCHEMA)
        assert c.message.content == json.dumps(json.loads(c.message.content), separators=(",", ":"))  # compact
        assert c.finish_reason == "stop"
        if thinking:  # the reasoning ended by the default budget (half of max_tokens) at the latest
            assert c.message.reasoning_content is not None
    assert r.usage.completion_tokens <= 2 * 256


def test_streamed_with_a_thinking_budget(client, tiny_state):
    content, tokens, finish = "", [], None
    stream = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=120, temperature=1, seed=4,
                                            response_format=FORMAT, stream=True, logprobs=True,
                                            extra_body={"thinking_budget": 5})
    for chunk in stream:
        for ch in chunk.choices:
            content += ch.delta.content or ""
            tokens += [t.token for t in (ch.logprobs.content if ch.logprobs else None) or []]
            finish = ch.finish_reason or finish
    jsonschema.validate(json.loads(content), SCHEMA)
    assert finish == "stop"
    assert "</think>" in tokens[:6]  # 5 reasoning tokens at most, then </think>


def test_json_object(client, vocab, tiny_state):
    # any JSON object: complete when the model ends it, else a prefix the grammar accepts
    for seed in range(3):
        r = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=60, temperature=1, seed=seed,
                                           response_format={"type": "json_object"},
                                           extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        c = r.choices[0]
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.message.content), dict)
        else:
            assert c.finish_reason == "length"
            ids = tiny_state.tokenizer.encode(c.message.content)
            m = vocab.matcher(json_grammar({"type": "object"}, after_think=False))
            assert c.message.content.startswith("{") and m.validate_tokens(ids) == len(ids)


def test_response_format_on_completions(client):
    r = client.completions.create(model="tiny", prompt="Answer: ", max_tokens=64, temperature=1, seed=1,
                                  extra_body={"response_format": FORMAT})
    jsonschema.validate(json.loads(r.choices[0].text), SCHEMA)


def test_structured_and_free_requests_share_the_batch(tiny, tiny_state):
    # a constrained request does not hold the others back: both finish, each as asked
    import concurrent.futures as cf

    body = {"model": "tiny", "messages": ASK, "max_tokens": 40, "temperature": 1}
    with cf.ThreadPoolExecutor(2) as ex:
        free = ex.submit(httpx.post, tiny + "/v1/chat/completions", json={**body, "ignore_eos": True}, timeout=120)
        constrained = ex.submit(httpx.post, tiny + "/v1/chat/completions", timeout=120,
                                json={**body, "response_format": FORMAT, "chat_template_kwargs": {"enable_thinking": False}})
    assert free.result().json()["usage"]["completion_tokens"] == 40
    jsonschema.validate(json.loads(constrained.result().json()["choices"][0]["message"]["content"]), SCHEMA)


def test_interns1_tokenizer_vocabulary(tmp_path):
    # an Intern-S1 tokenizer directory: its added tokens are special, its domain pieces bytes
    from opens1 import load_tokenizer
    from tests.tokenizer.interns1_fixture import make_interns1_dir, small_vocab_merges

    make_interns1_dir(tmp_path / "tok", *small_vocab_merges())
    tok = load_tokenizer(tmp_path / "tok")
    eos = (tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>"))
    vocab = GrammarVocab(tok, eos)
    ids = tok.encode("<SMILES>CC(=O)O</SMILES> is acetic acid")
    assert vocab.lltok.decode_bytes(ids) == tok.decode_bytes(ids)
    m = vocab.matcher(json_grammar(SCHEMA, after_think=True))
    allowed = vocab.allowed(m)
    assert not allowed[[tok.token_to_id(t) for t in ("<think>", "<SMILES>", "<|action_start|>", *tok.special_tokens)]].any()
    assert m.consume_tokens(tok.encode('\n\n{"answer":"maybe","confidence":3}', split_special_tokens=True))
    assert set(vocab.allowed(m).nonzero().flatten().tolist()) <= set(eos)
