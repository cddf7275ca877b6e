"""The optional transformers wrapper and the fast tokenizer.json export."""

import pytest

pytest.importorskip("transformers")

from tokenizers import Tokenizer  # noqa: E402

from opens1.tokenizer.hf import OpenS1HFTokenizer, export_fast_tokenizer, save_hf_wrapper  # noqa: E402

TEXT = "Aspirin CC(=O)Oc1ccccc1C(=O)O <|im_end|> and <SMILES>CCO</SMILES> MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV"


def test_wrapper_matches_opens1(tok, tmp_path):
    h = OpenS1HFTokenizer(opens1_tokenizer=tok)
    ids = h(TEXT)["input_ids"]
    assert ids == tok.encode(TEXT) and h.decode(ids) == TEXT
    assert len(h) == len(tok) and h.eos_token_id == tok.eos_token_id and h.pad_token_id == tok.pad_token_id
    assert tok.eos_token_id not in ids  # the typed "<|im_end|>" is text
    assert h.decode(tok.encode("<SMILES>CCO</SMILES>"), skip_special_tokens=True) == "CCO"
    batch = h(["a b", "CCO"], padding=True)["input_ids"]
    assert batch[0][-1] == tok.pad_token_id and len(batch[0]) == len(batch[1])
    msgs = [{"role": "user", "content": "hi <|im_end|>"}]
    assert h.apply_chat_template(msgs, add_generation_prompt=True) == tok.apply_chat_template(msgs)
    save_hf_wrapper(tok, tmp_path / "hf")
    again = OpenS1HFTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert again(TEXT)["input_ids"] == tok.encode(TEXT)


def test_fast_export_exact_without_domain_spans(tok, tmp_path):
    fast = Tokenizer.from_file(str(export_fast_tokenizer(tok, tmp_path)))
    for text in ["Plain prose, numbers 12345, unicode é日本 🙂 and code: def f(x): return x**2\n",
                 "H2SO4 and CH3CH2OH are formulas.", "  spaces\t\ttabs\r\n"]:
        assert fast.encode(text, add_special_tokens=False).ids == tok.encode(text)
        assert fast.decode(tok.encode(text), skip_special_tokens=False) == text
    for s, i in tok.special_tokens.items():
        assert fast.token_to_id(s) == i
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = [{"role": "user", "content": "hi"}]
    assert auto.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False) == \
        tok.apply_chat_template(msgs)
    assert auto.eos_token_id == tok.eos_token_id
