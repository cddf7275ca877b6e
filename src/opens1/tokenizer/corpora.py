"""The corpora the tokenizer's vocabularies are trained on, read from the real data in a data root.

Held-out data (never trained on, so `bench/tokenizer_compression.py` measures
generalisation): MOSES `test.csv`, every 10th QM9 row, USPTO `testT`, every 10th
protein of the proteome, the 100-gene file and the DNA contig, GSM8K test, and the
LaTeX papers in `text/`.

Diversity for SMILES: MOSES is ZINC-like drug-like molecules written canonically
and aromatic, with no stereo, charges or salts. We add the QM9 small molecules, the
molecules of the USPTO reactions (salts, charges, stereo, reagents) and, for a
share of molecules, RDKit-generated alternative writings: Kekulé SMILES and random
non-canonical atom orders, so the vocabulary also covers ChEMBL/NCI-style input.

IUPAC: no IUPAC-name corpus is available offline (RDKit has no namer and PubChem is
online only). The IUPAC vocabulary is trained on the systematic-name-like words
found in the QA texts plus a generated corpus of names built from the IUPAC
nomenclature morphemes (locants, multipliers, substituent prefixes, parent
hydrides, suffixes). Names are therefore realistic in form but not real names of
real molecules; byte fallback keeps any IUPAC span lossless regardless.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
from collections.abc import Iterator

from opens1.common.paths import has_data, open_data, read_fasta
from opens1.tokenizer.train_config import TrainConfig

# ---------------------------------------------------------------- corpora


def _jsonl(root, rel: str) -> Iterator[dict]:
    if not has_data(root, rel):
        return
    with open_data(root, rel) as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def prose_corpus(root=None) -> Iterator[str]:
    """English and math prose available offline. GSM8K test and the LaTeX papers are held out."""
    for d in _jsonl(root, "qa/gsm8k_train.jsonl"):
        yield d["question"] + "\n" + d["answer"]
    for d in _jsonl(root, "qa/math500_test.jsonl"):
        yield d["problem"] + "\n" + d.get("solution", "")
    for name in ("mmlu_stem", "college_math", "olympiadbench"):
        for d in _jsonl(root, f"qa/qwen25math_{name}.jsonl"):
            parts = [str(d.get(k, "")) for k in ("question", "problem", "solution", "answer")]
            parts += [str(c) for c in d.get("choices", []) or []]
            yield "\n".join(p for p in parts if p)
    # Python's own documentation topics (PSF licence): real English technical prose
    # that ships with every CPython, so the base vocabulary also knows code and docs.
    try:
        from pydoc_data.topics import topics

        yield from topics.values()
    except ImportError:  # pragma: no cover - some distributions strip pydoc_data
        pass


def csv_column(root, rel: str, column: str) -> Iterator[str]:
    with open_data(root, rel) as f:
        for row in csv.DictReader(f):
            yield row[column]


def strip_atom_maps(smiles: str) -> str:
    """`[CH3:1]` -> `C`: drop atom-map numbers with RDKit and re-canonicalise.
    Falls back to a regex when RDKit cannot parse the molecule."""
    from rdkit import Chem  # optional: rdkit

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return re.sub(r":\d+\]", "]", smiles)
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(0)
    return Chem.MolToSmiles(mol)


def reactions(root, split: str = "val", limit: int | None = None) -> Iterator[str]:
    """USPTO reactions as `reactants>>product` reaction SMILES with atom maps stripped."""
    rel = f"reactions/uspto_{split}T.csv"
    if not has_data(root, rel):
        return
    with open_data(root, rel) as f:
        for i, row in enumerate(csv.DictReader(f)):
            if limit is not None and i >= limit:
                break
            yield strip_atom_maps(row["target"]) + ">>" + strip_atom_maps(row["input"])


def random_smiles(mol, rng: random.Random, kekule: bool = False) -> str:
    """A random-atom-order SMILES of `mol`, reproducible from `rng` (RDKit's own doRandom
    draws from an unseeded generator, which made training irreproducible)."""
    from rdkit import Chem  # optional: rdkit

    return Chem.MolToRandomSmilesVect(mol, 1, randomSeed=rng.randrange(1 << 31), kekuleSmiles=kekule)[0]


def alternative_forms(smiles: str, rng: random.Random) -> list[str]:
    """RDKit-generated alternative writings of one molecule: Kekulé and a random atom order."""
    from rdkit import Chem  # optional: rdkit

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return []
    out = []
    try:
        kek = Chem.Mol(mol)
        Chem.Kekulize(kek, clearAromaticFlags=True)
        out.append(Chem.MolToSmiles(kek, kekuleSmiles=True))
    except Exception:  # noqa: BLE001 - some aromatic systems cannot be kekulised
        pass
    out.append(random_smiles(mol, rng))
    if rng.random() < 0.5:  # random order AND Kekulé: the NCI/ChEMBL-export style
        try:
            kek = Chem.Mol(mol)
            Chem.Kekulize(kek, clearAromaticFlags=True)
            out.append(random_smiles(kek, rng, kekule=True))
        except Exception:  # noqa: BLE001
            pass
    return out


def smiles_corpus(root=None, cfg: TrainConfig | None = None) -> Iterator[str]:
    """Molecules and reactions for the SMILES vocabulary (MOSES test and every 10th QM9 row held out)."""
    from rdkit import RDLogger  # optional: rdkit

    RDLogger.DisableLog("rdApp.*")
    cfg = cfg or TrainConfig()
    rng = random.Random(cfg.seed)
    moses = list(csv_column(root, "smiles/train.csv", "SMILES"))
    rng.shuffle(moses)
    mols = moses[: cfg.n_smiles]
    if has_data(root, "smiles/qm9.csv"):
        qm9 = [s for i, s in enumerate(csv_column(root, "smiles/qm9.csv", "SMILES")) if i % 10 != 0]
        mols += qm9[: cfg.n_qm9]
    for r in reactions(root, "val", limit=cfg.n_reactions):
        yield r
        # the reaction's molecules on their own: salts, charges, stereo, reagents
        for part in r.replace(">>", ".").split("."):
            if part:
                mols.append(part)
    for s in mols:
        yield s
        if rng.random() < cfg.augment:
            yield from alternative_forms(s, rng)
    try:  # SELFIES share the SMILES vocabulary (as in Intern-S1); optional dependency
        import selfies  # optional: selfies

        for s in moses[cfg.n_smiles : cfg.n_smiles + cfg.n_selfies]:
            try:
                yield selfies.encoder(s)
            except Exception:  # noqa: BLE001 - unsupported molecules
                pass
    except ImportError:
        pass


PROTEOME = "sequences/938293.PRJEB85.HG003687.faa"
# DNA of other organisms whose predicted proteins join the protein corpus (the genome below
# is the held-out organism: its proteins are never trained on)
OTHER_DNA = ("sequences/1390.SAMEA104415756.OFHT01000022.fna", "sequences/CP040672.1.genes_100.fna")


def proteins(root=None, heldout: bool = False) -> Iterator[str]:
    """Proteome sequences; every 10th is held out for the benchmark."""
    with open_data(root, PROTEOME) as f:
        for i, (_, seq) in enumerate(read_fasta(f)):
            if (i % 10 == 0) == heldout:
                yield seq


def predicted_proteins(root, rel: str, train_on_it: bool = False) -> list[str]:
    """Proteins of a DNA file, predicted with pyrodigal (Prodigal's gene finder), written as
    Prodigal writes them (the training proteome's format): first residue M for a complete
    gene, `*` for the stop. train_on_it: learn the genome's own gene model (a whole
    genome); otherwise Prodigal's metagenomic models (contigs, gene lists)."""
    import pyrodigal  # optional: pyrodigal

    out = []
    with open_data(root, rel) as f:
        seqs = [s.encode() for _, s in read_fasta(f)]
    finder = pyrodigal.GeneFinder(meta=not train_on_it)
    if train_on_it:
        finder.train(*seqs)
    for s in seqs:
        for gene in finder.find_genes(s):
            p = gene.translate()
            out.append(p if gene.partial_begin else "M" + p[1:])
    return out


def unseen_proteome(root=None) -> list[str]:
    """The proteins of an organism no protein vocabulary is trained on: C. diphtheriae's
    ~2,300 genes predicted from its complete genome (needs pyrodigal)."""
    return predicted_proteins(root, GENOME, train_on_it=True)


def protein_corpus(root=None) -> Iterator[str]:
    yield from proteins(root, heldout=False)
    if importlib.util.find_spec("pyrodigal") is None:  # a training dependency (pip install opens1[dev])
        print("[tokenizer] pyrodigal is not installed: the protein corpus lacks the proteins predicted "
              "from sequences/ DNA, and the shipped protein vocabulary is not reproduced")
    else:
        for rel in OTHER_DNA:
            if has_data(root, rel):
                yield from predicted_proteins(root, rel)
    if has_data(root, "sequences/AMPvsUniProt.csv"):
        with open_data(root, "sequences/AMPvsUniProt.csv") as f:
            next(f)
            for line in f:
                seq = line.split(",")[0].strip()
                if seq.isalpha():
                    yield seq
    if has_data(root, "sequences/swissprot_100.dat"):
        with open_data(root, "sequences/swissprot_100.dat") as f:
            seq, inside = [], False
            for line in f:
                if line.startswith("SQ "):
                    inside, seq = True, []
                elif line.startswith("//"):
                    if seq:
                        yield "".join(seq)
                    inside = False
                elif inside:
                    seq.append(line.replace(" ", "").strip())


GENOME = "sequences/GCF_001457455.1_NCTC11397_genomic.fna"
GENES = "sequences/CP040672.1.genes_100.fna"


def dna_corpus(root=None, chunk: int = 2000, seed: int = 0) -> Iterator[str]:
    """Genome chunks for the DNA vocabulary; a tenth are lowercase (soft-masked style)
    and a tenth are written as RNA, so those forms get pieces too. Without the genome
    (embedded data), fall back to the 100-gene file."""
    rng = random.Random(seed)
    rel = GENOME if has_data(root, GENOME) else GENES
    with open_data(root, rel) as f:
        for _, seq in read_fasta(f):
            for i in range(0, len(seq), chunk):
                s = seq[i : i + chunk]
                r = rng.random()
                yield s.lower() if r < 0.1 else s.replace("T", "U") if r < 0.2 else s


# The IUPAC corpus: nomenclature morphemes combined into systematic names.
_MULT = ["", "di", "tri", "tetra"]
_SUBST = ["methyl", "ethyl", "propyl", "butyl", "isopropyl", "tert-butyl", "phenyl", "benzyl",
          "chloro", "bromo", "fluoro", "iodo", "nitro", "amino", "hydroxy", "methoxy", "ethoxy",
          "oxo", "cyano", "trifluoromethyl", "acetyl", "carbamoyl", "sulfamoyl", "methylsulfonyl",
          "piperidin-1-yl", "morpholin-4-yl", "pyridin-2-yl", "pyridin-3-yl", "thiophen-2-yl",
          "cyclopropyl", "cyclohexyl", "furan-2-yl", "1H-indol-3-yl", "naphthalen-1-yl", "phenoxy",
          "benzoyl", "dimethylamino", "carboxy", "vinyl", "allyl", "ethynyl", "imidazol-1-yl"]
_PARENT = ["methane", "ethane", "propane", "butane", "pentane", "hexane", "heptane", "octane",
           "benzene", "pyridine", "pyrimidine", "pyrazine", "piperidine", "piperazine", "morpholine",
           "cyclohexane", "cyclopentane", "naphthalene", "quinoline", "isoquinoline", "indole",
           "1H-pyrazole", "1,3-thiazole", "1,3-oxazole", "thiophene", "furan", "pyrrolidine",
           "1H-imidazole", "1H-benzimidazole", "1,2,4-triazole", "azetidine", "oxolane", "oxane"]
_SUFFIX = ["", "-1-ol", "-2-ol", "-1-amine", "-2-amine", "-1-carboxylic acid", "-2-carboxylic acid",
           "-1-carbaldehyde", "-2-one", "-3-one", "-1-carbonitrile", "-1-sulfonamide",
           "-2-carboxamide", "-1,2-diol", "-4-carboxylate", "-1-thiol", "-2-ylidene"]


def _iupac_name(rng: random.Random) -> str:
    subs = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        mult = rng.choice(_MULT)
        n = {"": 1, "di": 2, "tri": 3, "tetra": 4}[mult]
        locs = ",".join(str(x) for x in sorted(rng.sample(range(1, 9), n)))
        sub = rng.choice(_SUBST)
        if mult and ("-" in sub or "(" in sub):  # complex substituents: bis(...), tris(...)
            mult = {"di": "bis", "tri": "tris", "tetra": "tetrakis"}[mult]
            sub = f"({sub})"
        subs.append(f"{locs}-{mult}{sub}")
    subs.sort(key=lambda s: s.split("-", 1)[1].lstrip("ditrakisb("))
    name = "-".join(subs)
    parent = rng.choice(_PARENT)
    suffix = rng.choice(_SUFFIX)
    if suffix and parent.endswith("e") and suffix[1:2].isdigit() and suffix.split("-")[-1][0] in "aeiouy":
        parent = parent[:-1]
    name = (name + ("" if not name or parent[0].isdigit() else "") + parent + suffix) if name else parent + suffix
    salt = rng.random()
    if salt < 0.05:
        name += " hydrochloride"
    elif salt < 0.08:
        name = "(2S)-" + name
    elif salt < 0.1:
        name = "(E)-" + name
    return name


_NAME_WORD = re.compile(r"\b(?:\(?\d[\d,]*[A-Za-z]?\)?-)?[a-z]*(?:yl|ane|ene|yne|ol|one|oic|amine|amide|ate|ide|ine|ole)\w*\b")


def iupac_corpus(root=None, n: int = 30_000, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(n):
        yield _iupac_name(rng)
    # systematic-looking words in real chemistry problems (locants, -yl/-ane/-ol ...)
    for name in ("mmlu_stem",):
        for d in _jsonl(root, f"qa/qwen25math_{name}.jsonl"):
            words = _NAME_WORD.findall(d.get("question", ""))
            if words:
                yield " ".join(words)


