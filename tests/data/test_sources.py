"""The readers yield real samples from every modality, from the embedded subset (and
../shared/data where noted); to_document tokenizes them for each stage."""

import itertools

import pytest

from opens1.data.sources import READERS, Sample, load_mixture, parse_mixture, to_document


def _first(name, n=3, root=None):
    return list(itertools.islice(READERS[name](root), n))


@pytest.mark.parametrize("name,needle", [("gsm8k", "Question:"), ("smiles", "<SMILES>"), ("qm9", "HOMO"),
                                         ("reactions", ">>"), ("protein", "<FASTA>M"), ("dna", "<DNA>")])
def test_text_readers(name, needle):
    xs = _first(name)
    assert len(xs) == 3 and all(needle in s.text for s in xs)


def test_reactions_drop_atom_maps():
    s = _first("reactions", 1)[0]
    assert ":1]" not in s.text and "<SMILES>" in s.text


def test_molecule_images_are_real_pairs():
    s = _first("molecule_images", 1)[0]
    user, reply = s.messages
    img = user["content"][0]["image"]
    assert img.size == (224, 224) and img.getextrema() != ((255, 255),) * 3  # a drawing, not blank
    assert "formula C" in reply["content"] and "<SMILES>" in reply["content"]


def test_ecg_windows_carry_annotations():
    s = _first("ecg", 1)[0]
    ts = s.messages[0]["content"][0]["time_series"]
    assert ts["sampling_rate"] == 360.0 and len(ts["values"]) == 1440 and len(ts["values"][0]) == 2
    assert "beats" in s.messages[1]["content"] and "bpm" in s.messages[1]["content"]


def test_shared_data_latex_and_seismic(shared_data):
    tex = _first("latex", 2, shared_data)
    assert tex and any("\\" in s.text for s in tex)
    seis = _first("seismic", 1, shared_data)
    assert seis and "Hz" in seis[0].messages[1]["content"]


def test_mixture_parsing_and_errors():
    assert parse_mixture("gsm8k:2, smiles") == {"gsm8k": 2.0, "smiles": 1.0}
    with pytest.raises(ValueError, match="unknown data source"):
        parse_mixture("gsm8k,math500_test")
    mix = load_mixture("gsm8k:1,dna:0.5", None, samples_per_unit=10)
    assert sum(s.source == "gsm8k" for s in mix) == 10 and sum(s.source == "dna" for s in mix) == 5


def test_sample_holds_one_kind():
    with pytest.raises(ValueError):
        Sample("x")


def test_text_to_document(tokenizer_for_data):
    doc = to_document(Sample("t", text="<SMILES>CCO</SMILES> is ethanol."), "pretrain", tokenizer_for_data)
    assert doc.input_ids[-1] == tokenizer_for_data.eos_token_id and doc.labels.tolist() == doc.input_ids.tolist()


def test_no_environment_heldout_items_leak_into_training():
    from opens1.envs.base import is_heldout
    from opens1.rewards.chem import canonical_smiles

    qm9 = _first("qm9", 300)
    assert len(qm9) == 300 and not any(is_heldout(canonical_smiles(s.meta["smiles"])) for s in qm9)
    prots = _first("protein", 300)
    seqs = [s.text.split("<FASTA>")[1].split("</FASTA>")[0] for s in prots]
    assert not any(is_heldout(q) for q in seqs)
    ecg = _first("ecg", 60)
    assert not any(is_heldout(f"mitdb100|block{s.meta['start'] // 21600}") for s in ecg)
    # and the rule really removes something: about 1 in 10 keys is held out
    from opens1.data.sources import read_proteins

    assert len(list(read_proteins(None))) < 2100 * 0.95
