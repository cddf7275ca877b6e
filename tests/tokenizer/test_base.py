"""The base BPE: byte map, tiktoken -> HF conversion, and the Qwen3-based tokenizer."""

import pytest

from opens1.tokenizer.base import byte_to_unicode, bytes_token, token_bytes


def test_byte_map_is_a_bijection():
    m = byte_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ"
    raw = bytes(range(256))
    assert token_bytes(bytes_token(raw)) == raw


def test_missing_tiktoken_file(tmp_path):
    from opens1.tokenizer import load_tokenizer

    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nope.tiktoken")


@pytest.mark.slow
def test_qwen3_base_equals_tiktoken(shared_data):
    """Our HF conversion of qwen.tiktoken tokenizes exactly like tiktoken itself, and the
    Qwen3-based dynamic tokenizer keeps Qwen3's ids for prose and its added tokens."""
    import tiktoken
    import tiktoken.load

    from opens1.tokenizer import qwen3_tokenizer
    from opens1.tokenizer.base import QWEN_PATTERN

    path = shared_data / "tokenizers" / "qwen.tiktoken"
    ref = tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN,
                            mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(path)), special_tokens={})
    tok = qwen3_tokenizer(path)
    texts = [(shared_data / "text" / "latex_1706.03762").glob("*.tex").__next__().read_text()[:20000],
             "Hello, wörld! 日本語のテキスト 🙂 1234567 \t\n  x", "def f(x):\n    return x**2  # ok\n"]
    for t in texts:
        assert tok.base.encode(t, add_special_tokens=False).ids == ref.encode_ordinary(t)
        assert tok.encode(t) == ref.encode_ordinary(t) or any(s.domain for s in tok.segments(t))
    assert tok.token_to_id("<|im_end|>") == 151645 and tok.token_to_id("</think>") == 151668
    assert tok.offsets["smiles"] > max(tok.special_tokens.values())
    text = "x <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES> <FASTA>MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV</FASTA>"
    assert tok.decode(tok.encode(text)) == text
