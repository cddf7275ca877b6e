"""Validity checks on real molecules and sequences from the embedded data subset."""

import csv


from opens1.corpus.validity import (check_record, dna_valid, protein_valid, reaction_valid, sequence_valid,
                                    smiles_valid)
from opens1.common.paths import open_data


def _fasta(rel):
    seqs, cur = [], []
    with open_data(None, rel) as f:
        for line in f:
            if line.startswith(">"):
                if cur:
                    seqs.append("".join(cur))
                cur = []
            else:
                cur.append(line.strip())
    seqs.append("".join(cur))
    return seqs


def test_real_smiles_parse_and_corruptions_fail():
    with open_data(None, "smiles/qm9.csv") as f:
        smiles = [r["SMILES"] for _, r in zip(range(200), csv.DictReader(f))]
    assert all(smiles_valid(s) for s in smiles)
    # Corruptions a text pipeline produces: unclosed ring, broken branch, bad valence, spaces.
    for bad in ("C1CCCC", "CC(C", "C(C)(C)(C)(C)C", "c1cccc1", "C C O", ""):
        assert not smiles_valid(bad), bad


def test_real_proteome_and_genes():
    proteins = _fasta("sequences/938293.PRJEB85.HG003687.faa")[:300]
    genes = _fasta("sequences/CP040672.1.genes_100.fna")
    assert all(protein_valid(p) for p in proteins)  # trailing '*' stop codons are allowed
    assert all(dna_valid(g, strict=True) for g in genes)
    assert all(sequence_valid(g) for g in genes) and all(sequence_valid(p) for p in proteins[:50])
    assert not protein_valid(proteins[0][:20] + "1" + proteins[0][20:])
    assert not dna_valid("ACGTXQ") and not protein_valid("M")  # bad letters; too short


def test_check_record_fields_and_tags():
    ok = check_record({"text": "Ethanol is <SMILES>CCO</SMILES>; peptide <FASTA>MKVLAAGIV</FASTA>."})
    assert ok.ok and ok.n_checked == 2
    bad = check_record({"text": "x", "smiles": ["CCO", "C1CC"], "dna": "ACGU"})
    assert not bad.ok and bad.n_checked == 3 and len(bad.errors) == 1 and "C1CC" in bad.errors[0]
    assert check_record({"text": "no chemistry here"}).n_checked == 0


def test_real_uspto_reactions():
    with open_data(None, "reactions/uspto_valT.csv") as f:
        rows = [r for _, r in zip(range(100), csv.DictReader(f))]
    rxns = [f"{r['target']}>>{r['input']}" for r in rows]  # reactants >> product, atom-mapped
    assert all(reaction_valid(x) for x in rxns)
    assert not reaction_valid(rows[0]["input"])  # a molecule is not a reaction
    assert not reaction_valid(">>" + rows[0]["input"]) and not reaction_valid(rxns[0].replace("]", "", 1))
    assert check_record({"text": "USPTO", "reaction": rxns[:3]}).n_checked == 3
