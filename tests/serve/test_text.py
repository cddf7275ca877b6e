"""Streaming text: incremental detokenization with the real tokenizer, and the
reasoning/content split of partial outputs, which must agree with the chat parser."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    out = OutputText(stop, thinking_open=thinking_open)
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


def naive_stream(text: str, stops: list[str], pieces: list[int], split: bool):
    """The definition: the text as it grows ends at the first piece that completes a stop
    string, cut where the earliest stop string in it starts; after each piece, everything
    but the longest tail that is a proper prefix of a stop string or marker may be sent."""
    markers = ["<think>", "</think>", "<|action_start|>"] if split else []
    sendable, pos = [], 0
    for n in pieces:
        pos += n
        seen = text[:pos]
        cuts = [seen.find(s) for s in stops if s in seen]
        if cuts:
            return seen[: min(cuts)], sendable
        held = max((k for m in markers + stops for k in range(1, len(m)) if seen.endswith(m[:k])), default=0)
        sendable.append(len(seen) - held)
    return text, sendable


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet="ab<>/think", max_size=40), stops=st.lists(st.text(alphabet="ab<", min_size=1, max_size=6), max_size=3),
       cuts=st.lists(st.integers(1, 5), min_size=1, max_size=40), split=st.booleans())
def test_stop_strings_and_hold_back_match_the_definition(text, stops, cuts, split):
    pieces, total = [], 0
    for c in cuts:
        if total >= len(text):
            break
        pieces.append(min(c, len(text) - total))
        total += pieces[-1]
    if total < len(text):
        pieces.append(len(text) - total)
    out = OutputText(stops, thinking_open=False, split=split)
    sendable, pos = [], 0
    for n in pieces:
        out.feed(text[pos : pos + n])
        pos += n
        if out.stopped:
            break
        sendable.append(len(out.text) - out._held_tail())
    final, want = naive_stream(text, stops, pieces, split)
    assert out.text == final
    assert sendable == want


def test_long_stop_string_in_a_long_stream():
    # the hold-back is one automaton step per character (not O(len(stop)^2) per token), so a
    # 1000-character stop string over a 20k-character stream is ordinary work
    stop = "ab" * 499 + "ac"
    text = "ab" * 10_000 + stop + "tail"
    out = OutputText([stop], thinking_open=False, split=False)
    sent = ""
    for i in range(0, len(text), 3):
        sent += out.feed(text[i : i + 3]).content
        if out.stopped:
            break
    sent += out.finish().content
    assert out.stopped and sent == out.text == "ab" * 10_000
