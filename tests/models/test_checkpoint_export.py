"""`opens1 model export --layout internvl SRC OUT`: transformers' InternVLForConditionalGeneration
loads OUT and gives OpenS1's logits on a prompt with an image; AutoTokenizer loads the
tokenizer written next to it and gives OpenS1's ids; a time-series tower is reported as left out."""

import json

import pytest
import torch
from PIL import Image

import opens1
from opens1.config import get_preset
from opens1.cli.model import main
from opens1.processing.processor import Processor, configure
from opens1.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A tiny random S1 (MoE text, RMSNorm + qk-norm vision, a time-series tower) with the
    bundled tokenizer, every weight perturbed so that nothing is trivially zero or one."""
    from opens1.models.s1 import S1ForConditionalGeneration

    tok = load_tokenizer()
    cfg = get_preset("debug")
    cfg.text.vocab_size = (len(tok) + 63) // 64 * 64
    configure(tok, cfg)
    torch.manual_seed(0)
    model = S1ForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    d = tmp_path_factory.mktemp("src")
    opens1.save_model(model, d)
    tok.save_pretrained(d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": tok.eos_token_id, "temperature": 0.8}))
    return d, tok


def _prompt(tok, cfg, tmp_path):
    path = tmp_path / "img.png"
    Image.linear_gradient("L").resize((120, 60)).convert("RGB").save(path)
    msgs = [{"role": "user", "content": [{"type": "image", "image": str(path)},
                                         {"type": "text", "text": "What is CC(=O)Oc1ccccc1C(=O)O?"}]}]
    return Processor(tok, cfg.replace(timeseries=None))(msgs)


def test_export_internvl_loads_in_transformers(src, tmp_path, capsys):
    d, tok = src
    out = tmp_path / "out"
    assert main(["export", "--layout", "internvl", str(d), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out (InternVL has no time-series tower)" in printed and "AutoTokenizer" in printed
    conf = json.loads((out / "config.json").read_text())
    assert conf["model_type"] == "internvl" and conf["architectures"] == ["InternVLForConditionalGeneration"]
    assert json.loads((out / "generation_config.json").read_text())["temperature"] == 0.8
    ours = opens1.load_model(d, dtype=torch.float32, device="cpu")
    hf = transformers.InternVLForConditionalGeneration.from_pretrained(str(out), dtype=torch.float32).eval()
    batch = _prompt(tok, ours.config, tmp_path)
    assert int((batch["input_ids"] == ours.config.image_token_id).sum()) > 0
    with torch.no_grad():
        want = ours(batch["input_ids"], pixel_values=batch["pixel_values"]).logits
        got = hf(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the tokenizer written next to it
    auto = transformers.AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    text = "Aspirin is CC(=O)Oc1ccccc1C(=O)O; MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV binds. <SMILES>CCO</SMILES>"
    assert auto(text)["input_ids"] == tok.encode(text)
    # and OpenS1 reads its own export back (without the time-series tower)
    back = opens1.load_model(out, dtype=torch.float32, device="cpu")
    assert back.config.timeseries is None
    with torch.no_grad():
        torch.testing.assert_close(back(batch["input_ids"], pixel_values=batch["pixel_values"]).logits, want)


def test_export_interns1_layout_round_trips(src, tmp_path, capsys):
    d, _ = src
    assert main(["export", "--layout", "interns1", str(d), str(tmp_path / "s1")]) == 0
    assert "left out" not in capsys.readouterr().out
    a = opens1.load_model(d, dtype=torch.float32, device="cpu").state_dict()
    b = opens1.load_model(tmp_path / "s1", dtype=torch.float32, device="cpu").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_errors(tmp_path, capsys):
    assert main(["init", "--preset", "debug", "--text-only", "--out", str(tmp_path / "text")]) == 0
    assert main(["export", "--layout", "internvl", str(tmp_path / "text"), str(tmp_path / "out")]) == 2
    assert "text-only" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out2")]) == 2
