"""`opens1 tokenizer ...` subcommands."""

import pytest

from opens1.tokenizer import load_tokenizer
from opens1.cli.tokenizer import main


def test_info_encode_decode(capsys):
    assert main(["info"]) == 0
    assert '"<IMG_CONTEXT>"' in capsys.readouterr().out
    assert main(["encode", "Aspirin CC(=O)Oc1ccccc1C(=O)O", "--show"]) == 0
    out = capsys.readouterr().out
    ids = [int(x) for x in out.splitlines()[0].split()]
    assert "[smiles ] 'CC(=O)Oc1ccccc1C(=O)O'" in out
    assert main(["decode", *map(str, ids)]) == 0
    assert capsys.readouterr().out == "Aspirin CC(=O)Oc1ccccc1C(=O)O\n"


@pytest.mark.slow
def test_train_quick(tmp_path):
    """Trains every vocabulary on the embedded data (seconds) into a loadable directory."""
    assert main(["train", "--preset", "quick", "--out", str(tmp_path / "tok")]) == 0
    tok = load_tokenizer(tmp_path / "tok")
    assert set(tok.sp) == {"smiles", "iupac", "protein", "dna"} and tok.n_base == 1024
    text = "Aspirin <SMILES>CC(=O)Oc1ccccc1C(=O)O</SMILES> and MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV <|im_end|>"
    assert tok.decode(tok.encode(text)) == text
    assert tok.provenance["smiles_vocab"] == 512
