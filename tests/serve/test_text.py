"""Streaming text: incremental detokenization with the real tokenizer, and the
reasoning/content split of partial outputs, which must agree with the chat parser."""

import pytest

from opens1 import load_tokenizer
from opens1.serve.text import IncrementalDecoder, OutputText, split_reasoning
from opens1.tokenizer.chat import parse_response


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.mark.parametrize("text", ["Hello, world! Ünïcödé 数学 🧪", "<SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES> is aspirin", "a\n\n  b\tc"])
def test_incremental_decoding_concatenates_to_decode(tok, text):
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids)
    assert not any("\ufffd" in p for p in pieces)  # split characters are held until complete


def stream(text: str, thinking_open: bool, stop=None, step=3):
    out = OutputText(stop, thinking_open)
    r = c = ""
    for i in range(0, len(text), step):
        d = out.feed(text[i : i + step])
        r, c = r + d.reasoning, c + d.content
        if out.stopped:
            break
    d = out.finish()
    return r + d.reasoning, c + d.content, out


FULL = "\nthinking hard\n</think>\n\nThe answer is 42.<|action_start|><|plugin|>\n{\"name\": \"f\", \"parameters\": {}}\n<|action_end|>"


@pytest.mark.parametrize("step", [1, 2, 5, 100])
def test_stream_split_agrees_with_parser(step):
    r, c, out = stream(FULL, thinking_open=True, step=step)
    parsed = parse_response(FULL, prompt_ends_in_think=True)
    assert r.strip("\n") == parsed.reasoning == "thinking hard"
    assert c.strip() == parsed.content == "The answer is 42."
    assert split_reasoning(out.text, True)[2].startswith("<|action_start|>")  # the tool call is held, not streamed
    assert [t.name for t in parsed.tool_calls] == ["f"]


def test_without_thinking_everything_is_content():
    r, c, _ = stream("plain answer", thinking_open=False)
    assert (r, c) == ("", "plain answer")
    # a model that opens its own think block is still split
    r, c, _ = stream("<think>hmm</think>yes", thinking_open=False, step=1)
    assert (r, c) == ("hmm", "yes")


def test_unfinished_thought_is_reasoning():
    r, c, _ = stream("still thinking about it", thinking_open=True)
    assert (r, c) == ("still thinking about it", "")


def test_stop_strings_cut_and_are_never_sent():
    for step in (1, 2, 7):
        r, c, out = stream("one two STOP three", thinking_open=False, stop=["STOP"], step=step)
        assert c == "one two " and out.stopped
    # a partial match at the end is held back, then released when it turns out not to be a stop
    out = OutputText(["STOP"], thinking_open=False)
    assert out.feed("abc ST").content == "abc "
    assert out.feed("ART").content == "START"
