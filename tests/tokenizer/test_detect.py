"""Auto-detection precision, both directions: what must go to a domain vocabulary and
what must stay in the base BPE."""

import pytest

from opens1.tokenizer import detect

AUTO = frozenset({"smiles", "protein", "dna"})
TAGS = frozenset({"SMILES", "SELFIES", "IUPAC", "FASTA", "DNA"})


def spans(text):
    return [(s.domain, text[s.start : s.end]) for s in detect.segment(text, TAGS, AUTO) if s.domain and not s.tag]


@pytest.mark.parametrize(
    "text, domain, span",
    [
        ("Aspirin is CC(=O)Oc1ccccc1C(=O)O.", "smiles", "CC(=O)Oc1ccccc1C(=O)O"),
        ("caffeine (CN1C=NC2=C1C(=O)N(C(=O)N2C)C) is", "smiles", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"),
        ("salt: CC(=O)Oc1ccccc1C(=O)[O-].[Na+], dissolved", "smiles", "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]"),
        ("stereo C[C@H](N)C(=O)O here", "smiles", "C[C@H](N)C(=O)O"),
        ("Kekulé form CC1=CC=CC=C1C=O too", "smiles", "CC1=CC=CC=C1C=O"),
        ("trans: F/C=C/F and F/C=C/Cl", "smiles", None),  # short (< 10 units) stays prose
        ("reaction CCO.CC(=O)O>>CCOC(C)=O works", "smiles", "CCO.CC(=O)O>>CCOC(C)=O"),
        ("with agent CC(=O)Cl>N1CCCCC1>CC(=O)N1CCCCC1 ok", "smiles", "CC(=O)Cl>N1CCCCC1>CC(=O)N1CCCCC1"),
        ("Line1\nO=C(O)c1ccccc1O\nend", "smiles", "O=C(O)c1ccccc1O"),
        ("the protein MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK binds", "protein",
         "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEK"),
        ("stop codon MKVLAAGIVALLLAAGCSSHKEEKK* ends it", "protein", "MKVLAAGIVALLLAAGCSSHKEEKK*"),
        ("gene ATGACACTATGGGAGATGTTCACAGCAGCCGTTTTGG here", "dna", "ATGACACTATGGGAGATGTTCACAGCAGCCGTTTTGG"),
        ("mRNA AUGGCCAUUGUAAUGGGCCGCUGAAAGGGUGCC here", "dna", "AUGGCCAUUGUAAUGGGCCGCUGAAAGGGUGCC"),
        ("soft-masked acgtacgtttgacgatcgatcgatgc", "dna", "acgtacgtttgacgatcgatcgatgc"),
    ],
)
def test_detected(text, domain, span):
    got = spans(text)
    if span is None:
        assert got == []
    else:
        assert (domain, span) in got, got


@pytest.mark.parametrize(
    "text",
    [
        "Sulfuric acid is H2SO4 and ethanol is CH3CH2OH or C2H5OH; glucose C6H12O6.",
        "Condensed: CH3CH2CH2CH2CH2OH and (CH3)3COH.",
        "See https://example.com/api/v1/items?id=COc1ccccc1&sort=asc for details.",
        "def f(x): return x.CCCC(1) + g(a=1, b=2)  # code",
        "NASA, CERN, IUPAC and NCBI are acronyms; so is SARS-CoV-2.",
        "THIS IS A SHOUTED SENTENCE WITH MANY CAPITAL LETTERS IN IT.",
        "SUPERCALIFRAGILISTICEXPIALIDOCIOUSLY long word.",
        "INTERNATIONALIZATIONANDLOCALIZATIONSTANDARDS run together",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ is the alphabet.",
        "sha256 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
        "base64 QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo= token",
        "MAX_SEQUENCE_LENGTH_FOR_THE_ENCODER_MODEL = 512",
        "Numbers 1234567890 12345678901234567890 and 3.14159265358979.",
        "The cocoon was concocted in ccccccccccc fashion.",
        "aaaaaaaaaaaaaaaaaaaaaaaaaa screams",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAH!",
        "/usr/local/bin/python3 -m pip install --upgrade pip",
        "C:\\Program Files\\CCleaner\\CCleaner64.exe",
        "2024-01-01T12:00:00+00:00 is an ISO date",
        "Mr. O'Brien (CNN) said: 'OK.'",
        "Energy E = mc^2, F = ma, PV = nRT.",
        "catalog number CN1234-56789/OCC",
    ],
)
def test_stays_prose(text):
    assert spans(text) == [], spans(text)


def test_smiles_validation_is_cached():
    detect.rdkit_parses.cache_clear()
    detect.is_smiles.cache_clear()
    assert detect.is_smiles("CC(=O)Oc1ccccc1C(=O)O") and detect.is_smiles("CC(=O)Oc1ccccc1C(=O)O")
    assert detect.is_smiles.cache_info().hits >= 1


def test_invalid_smiles_rejected():
    assert not detect.is_smiles("C1CCCCC(((((O")  # unbalanced
    assert not detect.is_smiles("CC(C)(C)(C)(C)C")  # pentavalent carbon
    assert not detect.is_smiles("CCO>>")  # reaction without product


def test_segment_covers_text_exactly():
    text = "a <SMILES>CCO</SMILES> b CC(=O)Oc1ccccc1C(=O)O c <MOLFORMULA>CC(=O)Oc1ccccc1C(=O)O</MOLFORMULA> <DNA>AC"
    segs = detect.segment(text, TAGS, AUTO)
    assert segs[0].start == 0 and segs[-1].end == len(text)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    tags = [text[s.start : s.end] for s in segs if s.tag]
    assert tags == ["<SMILES>", "</SMILES>", "<DNA>"]


def test_tags_without_ids_are_text():
    segs = detect.segment("<DNA>ACGT</DNA>", frozenset({"SMILES"}), AUTO)
    assert all(not s.tag for s in segs)


def test_real_data_both_directions(shared_data):
    """No detection in 2 MB of real prose (LaTeX papers, GSM8K, MATH); high recall on real
    molecules, proteins and genes written one per line in text."""
    import gzip
    import json

    from opens1.tokenizer import load_tokenizer

    tok = load_tokenizer()
    prose = [p.read_text(errors="replace") for p in sorted((shared_data / "text").glob("*/*.tex"))]
    for rel in ("qa/gsm8k_test.jsonl", "qa/math500_test.jsonl"):
        prose += [" ".join(map(str, json.loads(line).values())) for line in (shared_data / rel).read_text().splitlines()]
    found = [(s.domain, t[s.start : s.end]) for t in prose for s in tok.segments(t) if s.domain]
    assert found == []

    def covered(text, domain):
        return sum(s.end - s.start for s in tok.segments(text) if s.domain == domain)

    faa = (shared_data / "sequences/938293.PRJEB85.HG003687.faa").read_text()[:100_000]
    residues = sum(len(line) for line in faa.splitlines() if not line.startswith(">"))
    assert covered(faa, "protein") / residues > 0.95  # only short last lines of records stay prose
    fna = (shared_data / "sequences/CP040672.1.genes_100.fna").read_text()
    bases = sum(len(line) for line in fna.splitlines() if not line.startswith(">"))
    assert covered(fna, "dna") / bases > 0.95
    with gzip.open(shared_data / "smiles/test.csv.gz", "rt") as f:
        lines = f.read().splitlines()[1:1001]
    text = "\n".join(f"Molecule {i}: {s}." for i, s in enumerate(lines))
    got = {text[s.start : s.end] for s in tok.segments(text) if s.domain == "smiles"}
    assert sum(s in got for s in lines) / len(lines) > 0.99


def test_linear_time_bounds(monkeypatch):
    """Structural linearity: RDKit never sees a run longer than MAX_SMILES_CHECK characters (it
    is super-linear in the length), so a 40k-character `[C@@H]` run stays prose without a
    parse; trimming is one pass (the result on long runs is the same as on short ones)."""
    seen = []
    real = detect.rdkit_parses.__wrapped__

    def spy(s):
        seen.append(len(s))
        return real(s)

    monkeypatch.setattr(detect, "rdkit_parses", spy)
    detect.is_smiles.cache_clear()
    run = "[C@@H]" * 7000
    assert spans(f"x {run} y CC(=O)Oc1ccccc1C(=O)O z") == [("smiles", "CC(=O)Oc1ccccc1C(=O)O")]
    assert seen and max(seen) <= detect.MAX_SMILES_CHECK
    long = "(" * 3000 + "CC(=O)Oc1ccccc1C(=O)O" + ")" * 3000
    assert detect._trim(long, 0, len(long)) == (0, len(long))  # balanced: nothing to drop
    assert detect._trim("CCO)))", 0, 6) == (0, 3) and detect._trim("(((CCO", 0, 6) == (3, 6)
    detect.is_smiles.cache_clear()
