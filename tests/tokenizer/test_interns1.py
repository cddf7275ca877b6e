"""An Intern-S1 tokenizer directory gives transformers' InternS1Tokenizer's ids for every text.

transformers 5.23 does not ship InternS1Tokenizer and the hub's copy needs a download, so the
ids are compared with `interns1_reference.ReferenceInternS1`, an independent re-statement of
that class's behaviour (see its docstring), on stand-in directories in the real format
(`interns1_fixture`). With Qwen3's real BPE (slow tier) the ids of transformers' own
InternS1 tokenizer test are reproduced exactly."""

import json
import random
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opens1.tokenizer import detect, load_tokenizer
from opens1.tokenizer.interns1 import InternS1Tokenizer
from opens1.tokenizer.interns1_detect import MAX_BRACKET, SMILES_RE

from .interns1_fixture import DATA, REAL_ADDED, added_tokens, make_interns1_dir, qwen3_vocab_merges, small_vocab_merges
from .interns1_reference import ReferenceInternS1

EXAMPLE = "Describe <SMILES>C1=CC=C(C=C1)C=O</SMILES> and CC1=CC=CC=C1C=O"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
PROTEIN = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"

# Fragments of the mixed corpus: prose, bare and tagged domain strings, tag misuse, added-token
# strings, NFD text, whitespace runs, characters the domain models have never seen.
FRAGMENTS = [
    "The answer is 42.", " and ", "\n", "\n\n", "   ", "\t", "  \n  \n", "é", "e\u0301", "Cafe\u0301 ",
    "Ångström (A\u030angstro\u0308m)", "日本語のテキスト", "🙂", "\u2581", "x\u2581y",
    ASPIRIN, f"Aspirin is {ASPIRIN}.", "caffeine (CN1C=NC2=C1C(=O)N(C(=O)N2C)C) is", "C[C@@H](N)C(=O)O",
    "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]", "CCO.CC(=O)O>>CCOC(C)=O", "xCC(=O)Oc1ccccc1C(=O)O", "CCCCCCCCCCCC",
    "H2SO4 and CH3CH2OH", "C1CCCCC1C1CCCCC1C1CCCCC1", "c1ccccc1", "[Na+].[Cl-]", "O=C=O", "CC(C)(C)(C)(C)C",
    "<SMILES>", "</SMILES>", f"<SMILES>{ASPIRIN}</SMILES>", "<SELFIES>[C][C][O]</SELFIES>",
    "<IUPAC>2-acetyloxybenzoic acid</IUPAC>", "<IUPAC>", "</IUPAC>", f"<FASTA>{PROTEIN}</FASTA>", "<FASTA>",
    "</FASTA>", "<MOLFORMULA>C6H12O6</MOLFORMULA>", f"<MOLFORMULA>{ASPIRIN}</MOLFORMULA>", "<MOLFORMULA>",
    "</MOLFORMULA>", "<SMILES_AUTO_DETECT>", "</FASTA_AUTO_DETECT>", "<DNA>ACGT</DNA>",
    PROTEIN, f"protein {PROTEIN} binds", "MKVLAAGIVALLLAAGCSSHKEEKK*", "ATGACACTATGGGAGATGTTCACAGCAGCCGTTTTGG",
    "acgtacgtttgacgatcgatcgatgc", "THIS IS SHOUTED", "SUPERCALIFRAGILISTICEXPIALIDOCIOUS",
    "INTERNATIONALIZATIONANDLOCALIZATION", "ABCDEFGHIJKLMNOPQRSTUVWXYZABC", "ACGTACGTACGTACGTACGTACGTACGTACGT",
    "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|action_start|><|plugin|>", "<|action_end|>",
    "<IMG_CONTEXT>", "<img>", "</img>", "<video>", "<|endoftext|>", "<tool_call>", "<|box_start|>",
    "<SMILES>CC é 日本</SMILES>", "<SMILES>C C\tO\n</SMILES>", "<FASTA>MKT\u2581AYI</FASTA>",
    "[see ref. 12]", "[[[", "]]", "f(x) = x**2 + 3.14", "https://example.com/?q=COc1ccccc1",
]


def mixed_corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = list(FRAGMENTS)
    for _ in range(n):
        texts.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(2, 7))))
    return texts


@pytest.fixture(scope="module")
def small_s1(tmp_path_factory):
    """An Intern-S1-format directory over OpenS1's small BPE: (directory, BPE size)."""
    vocab, merges = small_vocab_merges()
    path = tmp_path_factory.mktemp("interns1") / "s1"
    return path, make_interns1_dir(path, vocab, merges)


@pytest.fixture(scope="module")
def pair(small_s1):
    return load_tokenizer(small_s1[0]), ReferenceInternS1(small_s1[0])


def test_layout_all_48_added_tokens(small_s1, tmp_path):
    path, n = small_s1
    tok = load_tokenizer(path)
    assert isinstance(tok, InternS1Tokenizer)
    assert tok.offsets == {"smiles": n + 26, "iupac": n + 26 + 256 + 4, "protein": n + 26 + 256 + 4 + 512 + 2}
    want = added_tokens(n)
    assert {t: tok.token_to_id(t) for t in want} == want and len(want) == 48
    assert "<SMILES_AUTO_DETECT>" not in tok.special_tokens and "<MOLFORMULA>" not in tok.special_tokens
    # the domain tags' ids are computed, whether or not the config lists them
    vocab, merges = small_vocab_merges()
    make_interns1_dir(tmp_path / "no_tags", vocab, merges, config="no_domain_tags")
    assert {t: load_tokenizer(tmp_path / "no_tags").token_to_id(t) for t in want} == want
    make_interns1_dir(tmp_path / "no_config", vocab, merges, config="none")
    assert {t: load_tokenizer(tmp_path / "no_config").token_to_id(t) for t in want} == want
    ref = ReferenceInternS1(tmp_path / "no_tags")
    assert all(ref.added[t] == i for t, i in want.items() if t in ref.added)


def test_mixed_corpus_equals_reference(pair):
    tok, ref = pair
    texts = mixed_corpus()
    got = tok.encode_batch(texts)
    bad = [t for t, ids in zip(texts, got) if ids != ref.encode(t)]
    assert not bad, f"{len(bad)}/{len(texts)} differ, e.g. {bad[:3]!r}"
    assert [tok.encode(t) for t in texts[:50]] == got[:50]  # encode_batch == encode
    # split_special_tokens=True: nothing is split, as in transformers
    flat = tok.encode_batch(texts[:150], split_special_tokens=True)
    assert flat == [ref.encode(t, split_special_tokens=True) for t in texts[:150]]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(alphabet="CNOcn()=[]@+-123456789 <>/SMILEFAT\u0301é\n", max_size=12),
                max_size=8))
def test_generated_texts_equal_reference(pair, parts):
    tok, ref = pair
    text = "".join(parts)
    assert tok.encode(text) == ref.encode(text), text


def test_rule_checker_without_rdkit_equals_reference(small_s1, monkeypatch):
    """Without RDKit both use transformers' rule-based SMILES check."""
    monkeypatch.setattr(detect, "_Chem", None)
    tok, ref = load_tokenizer(small_s1[0]), ReferenceInternS1(small_s1[0], rdkit=False)
    texts = mixed_corpus(200, seed=1)
    assert [tok.encode(t) for t in texts] == [ref.encode(t) for t in texts]


def test_added_token_strip_flags(tmp_path):
    """AddedToken lstrip / rstrip / single_word from tokenizer_config.json are honoured."""
    vocab, merges = small_vocab_merges()
    flags = {"<|im_end|>": {"lstrip": True, "rstrip": True}, "<think>": {"single_word": True},
             "<SMILES>": {"rstrip": True}}  # a domain tag's flags are the class's own (none)
    make_interns1_dir(tmp_path / "s1", vocab, merges, flags=flags)
    tok, ref = load_tokenizer(tmp_path / "s1"), ReferenceInternS1(tmp_path / "s1")
    for text in ["a  <|im_end|>  b", "x<think>y", "x <think> y", "<think>z", "q<|im_end|>\n\n<SMILES> CCO</SMILES>"]:
        assert tok.encode(text) == ref.encode(text), text


def test_decode_and_roundtrip(pair):
    tok, _ = pair
    for text in FRAGMENTS:
        if "\u2581" in text or "_AUTO_DETECT" in text:
            continue  # U+2581 is read as a space and typed wrappers vanish, as in Intern-S1
        nfc = unicodedata.normalize("NFC", text)
        assert tok.decode(tok.encode(text)) == nfc, text
    assert tok.decode(tok.encode("<SMILES>CCO</SMILES> and <|im_end|>"), skip_special_tokens=True) == "CCO and "


def test_save_keeps_the_rules(pair, tmp_path):
    tok, _ = pair
    tok.save_pretrained(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert isinstance(again, InternS1Tokenizer) and again.special_tokens == tok.special_tokens
    texts = mixed_corpus(60, seed=2)
    assert again.encode_batch(texts) == tok.encode_batch(texts)


def test_linear_time_bounds(pair, monkeypatch):
    """Structural linearity: RDKit never sees a candidate over MAX_SMILES_CHECK characters and
    a bracket atom spans at most MAX_BRACKET characters (so each start position does bounded
    work); a 40k-character run of `[C@@H]` is not a molecule and stays BPE text."""
    tok, _ = pair
    seen = []
    real = detect.rdkit_parses

    def spy(s):
        seen.append(len(s))
        return real(s)

    monkeypatch.setattr("opens1.tokenizer.interns1_detect.rdkit_parses", spy)
    run = "[C@@H]" * 7000
    ids = tok.encode(f"x {run} y {ASPIRIN} z")
    assert seen and max(seen) <= detect.MAX_SMILES_CHECK
    assert all(i < tok.n_base or i >= tok.offsets["smiles"] + 256 for i in ids[:-30])  # the long run is BPE
    monkeypatch.setattr(detect, "MAX_SMILES_CHECK", 10**9)  # a molecule under the bound is detected
    assert any(tok.domain_of(i) == "smiles" for i in tok.encode(f"x {ASPIRIN} y"))
    assert f"{{1,{MAX_BRACKET}}}" in SMILES_RE.pattern


@pytest.mark.slow
def test_qwen3_bpe_real_ids(tmp_path, shared_data):
    """With Qwen3's real BPE: the ids of transformers' InternS1 tokenizer test, the
    reference's worked example, the real added-token ids, and the mixed corpus."""
    vocab, merges = qwen3_vocab_merges(shared_data / "tokenizers" / "qwen.tiktoken")
    n = make_interns1_dir(tmp_path / "s1", vocab, merges)
    assert n == 151643
    tok = load_tokenizer(tmp_path / "s1")
    assert {t: tok.token_to_id(t) for t in REAL_ADDED} == REAL_ADDED
    assert tok.offsets == {"smiles": 151669, "iupac": 151929, "protein": 152443}
    for seq in json.loads((DATA / "integration_ids.json").read_text(encoding="utf-8"))["sequences"]:
        assert tok.encode(seq["text"]) == seq["ids"]
        assert tok.decode(seq["ids"]) == seq["text"]
    # the reference's worked example (its SMILES pieces need the real SMILES model, not public)
    ids = tok.encode(EXAMPLE)
    j = ids.index(151926)  # </SMILES>
    assert ids[:3] == [74785, 220, 151925] and ids[j + 1 : j + 3] == [323, 220]  # "Describe", " ", <SMILES>; " and", " "
    assert all(i in range(151669, 151925) for i in ids[3:j] + ids[j + 3 :])  # both molecules: SMILES pieces only
    ref = ReferenceInternS1(tmp_path / "s1")
    texts = mixed_corpus(150, seed=3)
    assert tok.encode_batch(texts) == [ref.encode(t) for t in texts]
    # the chat conversations too, on the real BPE
    from transformers.utils.chat_template_utils import render_jinja_template

    from .chat_cases import TEXT_CASES

    real = (DATA / "chat_template.jinja").read_text(encoding="utf-8")
    for name, messages, kw in TEXT_CASES:
        kw = {"tools": kw.get("tools"), "enable_thinking": kw.get("enable_thinking", True),
              "add_generation_prompt": kw.get("add_generation_prompt", True)}
        text = render_jinja_template([messages], chat_template=real, **kw)[0][0]
        assert tok.apply_chat_template(messages, **kw) == ref.encode(text), name


def test_segments_show_the_rules(pair):
    tok, _ = pair
    text = f"Take {ASPIRIN} with <SMILES>CCO</SMILES> and {PROTEIN}<|im_end|>"
    segs = [(s.domain, s.tag, text[s.start:s.end]) for s in tok.segments(text)]
    assert (None, False, "Take ") in segs and ("smiles", False, ASPIRIN) in segs
    assert ("smiles", True, "<SMILES>") in segs and ("protein", False, PROTEIN) in segs
    assert (None, True, "<|im_end|>") in segs
