"""The dynamic tokenizer: lossless round trips, special tokens, tags, id layout, save/load."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opens1.tokenizer import CONTROL_TOKENS, DOMAIN_TAGS, DynamicTokenizer, load_tokenizer

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
PIECES = ["<SMILES>", "</SMILES>", "<SELFIES>", "</SELFIES>", "<IUPAC>", "</IUPAC>", "<FASTA>", "</FASTA>",
          "<DNA>", "</DNA>", "<MOLFORMULA>", "</MOLFORMULA>", "<|im_end|>", "<think>", "<IMG_CONTEXT>",
          ASPIRIN, "c1ccccc1", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV", "ATGACACTATGGGAGATGTTCACAGC",
          "\u2581", " ", "\n", "\t", "é", "日本", "\x00", "🙂", "e\u0301", "2-methylpropan-1-ol", "H2SO4"]


def test_default_tokenizer_shape(tok):
    assert len(tok) == tok.vocab_size > tok.n_base
    for t in CONTROL_TOKENS + tuple(t for tags in DOMAIN_TAGS.values() for t in tags):
        assert tok.token_to_id(t) == tok.encode_special(t)
    assert tok.eos_token_id == tok.token_to_id("<|im_end|>")
    assert tok.pad_token_id == tok.token_to_id("<|endoftext|>")
    assert set(tok.sp) == {"smiles", "iupac", "protein", "dna"}
    with pytest.raises(KeyError):
        tok.token_to_id("<not a token>")


def test_id_ranges_are_disjoint_and_dense(tok):
    kinds = [tok.domain_of(i) for i in range(len(tok))]
    assert None not in kinds  # the OpenS1 layout has no holes
    assert kinds[: tok.n_base] == ["base"] * tok.n_base
    for d, sp in tok.sp.items():
        off = tok.offsets[d]
        assert kinds[off : off + sp.get_piece_size()] == [d] * sp.get_piece_size()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_roundtrip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=12))
def test_roundtrip_tags_molecules_specials(tok, parts):
    text = "".join(parts)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # control tokens never come out of encode(), whatever the text says
    control = {tok.token_to_id(t) for t in CONTROL_TOKENS}
    assert not control & set(ids)
    # a domain span never yields <unk>
    unk = {tok.offsets[d] + sp.unk_id() for d, sp in tok.sp.items()}
    assert not unk & set(ids)


def test_no_unicode_normalisation(tok):
    for text in ["e\u0301", "\u00e9", "ﬁ", "Å", "\u212b", "  double  spaces \r\n"]:
        assert tok.decode(tok.encode(text)) == text


def test_special_strings_in_text_are_plain_text(tok):
    for s in ("<|im_end|>", "<|im_start|>", "<think>", "<|action_start|>", "<IMG_CONTEXT>", "<|endoftext|>"):
        ids = tok.encode(f"say {s} now")
        assert tok.token_to_id(s) not in ids
        assert len(ids) > 3
        assert tok.decode(ids) == f"say {s} now"


def test_explicit_tags_get_ids_and_switch_vocabulary(tok):
    ids = tok.encode(f"Describe <SMILES>{ASPIRIN}</SMILES> please")
    i, j = ids.index(tok.token_to_id("<SMILES>")), ids.index(tok.token_to_id("</SMILES>"))
    inner = ids[i + 1 : j]
    assert inner and all(tok.domain_of(x) == "smiles" for x in inner)
    assert tok.decode(inner) == ASPIRIN
    assert all(tok.domain_of(x) == "base" for x in ids[:i] + ids[j + 1 :])
    # the same characters outside a span are base tokens: orthogonal embedding rows
    assert set(tok.encode("CC")).isdisjoint(set(tok.encode("<SMILES>CC</SMILES>")[1:-1]))
    for tag, dom in (("IUPAC", "iupac"), ("FASTA", "protein"), ("DNA", "dna"), ("SELFIES", "smiles")):
        ids = tok.encode(f"<{tag}>ACGTACGT</{tag}>")
        assert ids[0] == tok.token_to_id(f"<{tag}>") and ids[-1] == tok.token_to_id(f"</{tag}>")
        assert all(tok.domain_of(x) == dom for x in ids[1:-1])


def test_unclosed_stray_and_nested_tags(tok):
    ids = tok.encode("<SMILES>CCO")  # unclosed: runs to the end
    assert ids[0] == tok.token_to_id("<SMILES>") and all(tok.domain_of(x) == "smiles" for x in ids[1:])
    ids = tok.encode("a </SMILES> b")  # stray closing tag: plain text
    assert tok.token_to_id("</SMILES>") not in ids
    text = "<SMILES>CC<IUPAC>x</IUPAC>O</SMILES>"  # inside a span only the matching close counts
    ids = tok.encode(text)
    assert tok.token_to_id("<IUPAC>") not in ids and tok.decode(ids) == text
    assert ids[-1] == tok.token_to_id("</SMILES>")


def test_molformula_protects_from_detection(tok):
    plain = tok.segments(f"x {ASPIRIN} y")
    assert any(s.domain == "smiles" for s in plain)
    prot = tok.segments(f"x <MOLFORMULA>{ASPIRIN}</MOLFORMULA> y")
    assert all(s.domain is None for s in prot)


def test_literal_sentencepiece_space_inside_span(tok):
    text = "<IUPAC>2-methyl\u2581propan-1-ol</IUPAC>"
    assert tok.decode(tok.encode(text)) == text


def test_decode_skip_special_and_errors(tok):
    ids = tok.encode(f"<SMILES>{ASPIRIN}</SMILES>")
    assert tok.decode(ids, skip_special_tokens=True) == ASPIRIN
    assert tok.decode([tok.eos_token_id]) == "<|im_end|>"
    with pytest.raises(ValueError):
        tok.decode([len(tok) + 5])
    with pytest.raises(ValueError):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    for bad in ("a\ud800b", "<SMILES>C\ud800</SMILES>"):  # lone surrogates are not text
        with pytest.raises(ValueError, match="Unicode"):
            tok.encode(bad)
    with pytest.raises(TypeError):
        tok.encode_batch("not a list")


def test_encode_batch_matches_encode(tok):
    texts = ["hello world", f"Aspirin {ASPIRIN}.", "", "<DNA>ACGT</DNA>", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_save_and_load(tok, tmp_path):
    tok.save_pretrained(tmp_path / "t")
    again = load_tokenizer(tmp_path / "t")
    assert len(again) == len(tok) and again.special_tokens == tok.special_tokens and again.offsets == tok.offsets
    text = f"x <SMILES>{ASPIRIN}</SMILES> MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV <|im_end|>"
    assert again.encode(text) == tok.encode(text)
    assert not list(tmp_path.glob("t/.*"))  # no temp files left behind


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError):
        load_tokenizer(tmp_path)  # an empty directory is not a tokenizer


def test_overlapping_layout_is_rejected(tok):
    with pytest.raises(ValueError, match="overlapping"):
        DynamicTokenizer(tok.base, tok.domain_models, {**tok.offsets, "dna": tok.offsets["protein"]}, tok.special_tokens)


def test_apply_chat_template(tok):
    ids = tok.apply_chat_template([{"role": "user", "content": "hi <|im_end|>"}], enable_thinking=False)
    assert ids.count(tok.eos_token_id) == 1  # only the real end of the user turn
    assert tok.decode(ids) == "<|im_start|>user\nhi <|im_end|><|im_end|>\n<|im_start|>assistant\n"


def test_pickles_for_worker_processes(tok):
    import pickle

    again = pickle.loads(pickle.dumps(tok))
    text = f"x <SMILES>{ASPIRIN}</SMILES> MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV"
    assert again.encode(text) == tok.encode(text) and len(again) == len(tok)
