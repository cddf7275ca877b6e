"""Loading an Intern-S1 HF tokenizer directory (vocab.json + merges.txt + three SentencePiece
models + tokenizer_config.json) with Intern-S1's id layout (reference §4.2).

The fixture directory is built in the real format: the BPE is our base (fast tier) or Qwen3's
exact BPE from qwen.tiktoken (slow tier, which checks the test-verified ids), and the
SentencePiece models have Intern-S1's sizes (256 SMILES, 512 IUPAC, 512 FASTA pieces) and,
like Intern-S1's, no byte fallback."""

import io
import itertools
import json

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from opens1.tokenizer import load_tokenizer
from opens1.tokenizer.dynamic import QWEN3_ADDED
from opens1.tokenizer.train import _csv_column, iupac_corpus, proteins

EXAMPLE = "Describe <SMILES>C1=CC=C(C=C1)C=O</SMILES> and CC1=CC=CC=C1C=O"


def _sp(texts, size) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=size, model_type="bpe",
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2, num_threads=1,
        max_sentence_length=1 << 16,
    )  # fmt: skip
    return buf.getvalue()


def make_interns1_dir(path, vocab: dict, merges: list[str]):
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    sm = list(itertools.islice(_csv_column(None, "smiles/train.csv", "SMILES"), 3000))
    models = {
        "SMILES": _sp(sm, 256),
        "IUPAC": _sp(list(iupac_corpus(None, n=3000)), 512),
        "FASTA": _sp(list(proteins(None)), 512),
    }
    for name, proto in models.items():
        (path / f"tokenizer_{name}.model").write_bytes(proto)
    n = len(vocab)
    added = {n + i: t for i, t in enumerate(QWEN3_ADDED)}
    smiles_tags = n + 26 + 256
    added.update({smiles_tags: "<SMILES>", smiles_tags + 1: "</SMILES>", smiles_tags + 2: "<SELFIES>", smiles_tags + 3: "</SELFIES>"})
    iupac_tags = smiles_tags + 4 + 512
    added.update({iupac_tags: "<IUPAC>", iupac_tags + 1: "</IUPAC>"})
    other = iupac_tags + 2 + 512
    for i, t in enumerate(["<img>", "</img>", "<IMG_CONTEXT>", "<SMILES_AUTO_DETECT>", "</SMILES_AUTO_DETECT>",
                           "<|action_start|>", "<|action_end|>", "<|plugin|>", "<|interpreter|>"]):
        added[other + i] = t
    config = {
        "tokenizer_class": "InternS1Tokenizer",
        "added_tokens_decoder": {str(i): {"content": t, "special": True} for i, t in sorted(added.items())},
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return n


def _check_layout(tok, n):
    assert tok.offsets == {"smiles": n + 26, "iupac": n + 26 + 256 + 4, "protein": n + 26 + 256 + 4 + 512 + 2}
    assert tok.token_to_id("<|im_end|>") == n + 2 and tok.token_to_id("<think>") == n + 24
    assert tok.token_to_id("<SMILES>") == n + 26 + 256 and tok.token_to_id("</IUPAC>") == n + 26 + 256 + 4 + 512 + 1
    assert tok.token_to_id("<IMG_CONTEXT>") == n + 26 + 256 + 4 + 512 + 2 + 512 + 2
    assert "<SMILES_AUTO_DETECT>" not in tok.special_tokens  # logical tags have no ids
    assert "<DNA>" not in tok.special_tokens and "dna" not in tok.sp


def _check_example(tok, n):
    ids = tok.encode(EXAMPLE)
    assert tok.decode(ids) == EXAMPLE
    s_open, s_close = tok.token_to_id("<SMILES>"), tok.token_to_id("</SMILES>")
    i, j = ids.index(s_open), ids.index(s_close)
    smiles_range = range(n + 26, n + 26 + 256)
    assert all(x in smiles_range for x in ids[i + 1 : j])
    # the second molecule is auto-detected: SMILES ids, no tag ids
    tail = ids[j + 1 :]
    k = next(k for k, x in enumerate(tail) if x in smiles_range)
    assert all(x in smiles_range for x in tail[k:]) and s_open not in tail
    assert tok.decode(tail[k:]) == "CC1=CC=CC=C1C=O"
    return ids[:i], tail[:k]


@pytest.fixture(scope="module")
def small_s1(tmp_path_factory):
    """An Intern-S1-format directory over our small base BPE: (directory, len(vocab.json))."""
    base = json.loads(load_tokenizer().base.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in base["merges"]]
    path = tmp_path_factory.mktemp("interns1") / "s1"
    return path, make_interns1_dir(path, base["vocab"], merges)


def test_interns1_layout_with_small_bpe(small_s1, tmp_path):
    path, n = small_s1
    tok = load_tokenizer(path)
    _check_layout(tok, n)
    _check_example(tok, n)
    # a model without byte fallback: unseen characters inside a span fall back to the BPE
    text = "<SMILES>CC(=O)O é\t日本</SMILES><IUPAC>2-méthyl\u2581propane</IUPAC>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert not {tok.offsets[d] for d in tok.sp} & set(ids)  # never <unk>
    # saving writes OpenS1's format, which keeps the Intern-S1 layout
    tok.save_pretrained(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.encode(EXAMPLE) == tok.encode(EXAMPLE) and again.special_tokens == tok.special_tokens


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<SMILES>", "</SMILES>", "<IUPAC>", "</IUPAC>", "<SELFIES>", "<FASTA>",
                                 "CC(=O)Oc1ccccc1C(=O)O", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV", " ", "\u2581", "é"])
                | st.text(max_size=6), max_size=10))
def test_interns1_roundtrip_without_byte_fallback(small_s1, parts):
    """Intern-S1's models have no byte fallback: whatever a span holds, nothing is lost."""
    tok = _loaded(small_s1[0])
    text = "".join(parts)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert not {tok.offsets[d] + tok.sp[d].unk_id() for d in tok.sp} & set(ids)


_CACHE = {}


def _loaded(path):
    if path not in _CACHE:
        _CACHE[path] = load_tokenizer(path)
    return _CACHE[path]


@pytest.mark.slow
def test_interns1_layout_with_qwen3_bpe(tmp_path, shared_data):
    """With Qwen3's real BPE the prose ids are the ones in Intern-S1's tokenizer test."""
    from opens1.tokenizer.base import vocab_merges_from_tiktoken

    vocab, merges = vocab_merges_from_tiktoken(shared_data / "tokenizers" / "qwen.tiktoken")
    n = make_interns1_dir(tmp_path / "s1", vocab, [f"{a} {b}" for a, b in merges])
    assert n == 151643
    tok = load_tokenizer(tmp_path / "s1")
    _check_layout(tok, n)
    assert tok.token_to_id("<SMILES>") == 151925 and tok.token_to_id("</SMILES>") == 151926
    assert tok.offsets == {"smiles": 151669, "iupac": 151929, "protein": 152443}
    assert tok.token_to_id("<IMG_CONTEXT>") == 152957  # S1's image_token_id
    head, middle = _check_example(tok, n)
    assert head == [74785, 220] and middle == [323, 220]  # "Describe", " " / " and", " "
