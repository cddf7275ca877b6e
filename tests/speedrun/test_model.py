"""The tiny preset's tokenizer (bundled, or trained when missing) and the model built for it."""

import pytest

import opens1
from opens1.speedrun import model


@pytest.mark.slow
def test_tokenizer_is_trained_when_missing(tmp_path, monkeypatch):
    """The speedrun trains the tiny preset's tokenizer if the bundled one is gone."""
    monkeypatch.setattr(model, "TINY_TOKENIZER", tmp_path / "missing")
    tok = model.load_or_train_tokenizer(tmp_path, None)
    assert (tmp_path / "tokenizer").is_dir()
    text = "Aspirin <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES> and <DNA>ATGGCGTTAGCA</DNA>"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok) <= opens1.get_preset("tiny").text.vocab_size


def test_bundled_tiny_tokenizer_reads_smiles_and_dna_one_character_a_token():
    tok = opens1.load_tokenizer(model.TINY_TOKENIZER)
    assert (len(tok) + 63) // 64 * 64 == opens1.get_preset("tiny").text.vocab_size
    assert opens1.get_preset("tiny").text.tie_word_embeddings
    smiles = "CC(=O)N(C)c1ccc(NC(=O)N2CCOCC2)cc1"
    ids = tok.encode(f"Rings of {smiles}?")
    assert sum(tok.domain_of(i) == "smiles" for i in ids) == len(smiles)
    dna = "ATGGCGTTAGCA"
    assert sum(tok.domain_of(i) == "dna" for i in tok.encode(f"<DNA>{dna}</DNA>")) == len(dna)
