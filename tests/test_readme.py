"""README.md's Python example ("Using the pieces") runs as written, against a tiny random
model and the bundled tokenizer saved to a temporary directory, with a real molecule drawing."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import opens1

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Using the pieces"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # counting intern-s1's parameters builds its 240B-parameter skeleton on the meta device
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    from rdkit import Chem
    from rdkit.Chem import Draw

    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.processor import configure

    tok = opens1.load_tokenizer()
    cfg = opens1.get_preset("tiny")
    cfg.text = dataclasses.replace(cfg.text, vocab_size=(len(tok) + 63) // 64 * 64)
    configure(tok, cfg)
    torch.manual_seed(0)
    model_dir = tmp_path / "Intern-S1-mini"
    opens1.save_model(S1ForConditionalGeneration(cfg), model_dir)
    tok.save_pretrained(model_dir)
    Draw.MolToFile(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"), str(tmp_path / "molecule.png"), size=(224, 224))
    monkeypatch.chdir(tmp_path)
    code = _example().replace("path/to/Intern-S1-mini", str(model_dir))
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert abs(float(capsys.readouterr().out.split()[0]) - 240.7) < 0.1  # the first print: B parameters
    out = scope["out"]
    n_prompt = scope["batch"]["input_ids"].shape[1]
    assert out.shape[0] == 1 and n_prompt < out.shape[1] <= n_prompt + 64
    assert (out[0, n_prompt:] < len(tok)).all()  # vocab_limit: no padded embedding row is sampled
