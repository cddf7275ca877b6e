"""Compression (characters per token) and throughput of OpenS1's tokenizer vs. references.

    python bench/tokenizer_compression.py                 # quick: ~1-2 min on 2 cores
    python bench/tokenizer_compression.py --n 5000        # bigger samples
    python bench/tokenizer_compression.py --tokenizer DIR # a trained tokenizer directory

All data is held out from tokenizer training (see opens1/tokenizer/corpora.py):
  drug-like   MOSES test split (canonical, aromatic)
  qm9         every 10th QM9 molecule
  chembl-like (USPTO)  molecules of held-out USPTO test reactions (salts, charges, stereo,
              reagents): a stand-in for ChEMBL, which is not available offline
  diverse     those molecules and MOSES test ones rewritten by RDKit in NCI style:
              Kekulé bonds and a random atom order
  reactions   held-out USPTO test reactions, atom maps stripped
  iupac       32 real IUPAC names of well-known molecules (the vocabulary saw generated names only)
  protein     every 10th protein of the training organism's proteome
  protein (unseen organism)  C. diphtheriae's proteins, predicted from its genome with
              pyrodigal: an organism whose proteins no vocabulary was trained on
  dna         the 100-gene file and the contig
  prose       the LaTeX papers in text/ and GSM8K test (not in the shipped training set)

Tokenizers: the OpenS1 default (domain spans inside explicit tags; the two tag ids are
not counted, so the number is the vocabulary's compression), OpenS1's vocabularies over
Qwen3's BPE, Qwen3 alone (tiktoken, qwen.tiktoken), o200k (tiktoken) and DeepSeek-V3
(HF tokenizers). Throughput: MB/s of OpenS1 (both bases) on mixed documents (prose
with molecules, reactions, proteins and DNA auto-detected) vs HF `tokenizers` running
Qwen3's BPE on the same text. Linearity: time per character at 10k and 160k characters of
pathological inputs (a `[C@@H]` run, unclosed brackets, a protein run) and of mixed
documents, for OpenS1's tokenizer and an Intern-S1-rules tokenizer (a directory in Intern-S1's
format built from the bundled vocabularies), with HF tokenizers' BPE on the same text.
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

from opens1.common.paths import data_root, has_data, open_data, read_fasta
from opens1.tokenizer import load_tokenizer, qwen3_tokenizer
from opens1.tokenizer.corpora import GENES, proteins, random_smiles, reactions, unseen_proteome

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TAGS = {"smiles": ("<SMILES>", "</SMILES>"), "iupac": ("<IUPAC>", "</IUPAC>"), "protein": ("<FASTA>", "</FASTA>"), "dna": ("<DNA>", "</DNA>")}


def nci_style(smiles: str, rng: random.Random) -> str | None:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001
        return None
    return random_smiles(mol, rng, kekule=True)


# Real IUPAC names of well-known molecules (written out here: there is no IUPAC corpus in
# the data). The IUPAC vocabulary never saw them; it was trained on generated names.
IUPAC_NAMES = [
    "2-acetyloxybenzoic acid", "1,3,7-trimethylpurine-2,6-dione", "N-(4-hydroxyphenyl)acetamide",
    "(2S)-2-amino-3-phenylpropanoic acid", "2-(4-isobutylphenyl)propanoic acid", "propan-2-ol",
    "2-methylpropan-1-ol", "ethane-1,2-diol", "propane-1,2,3-triol", "benzene-1,2-diol",
    "2,4,6-trinitrotoluene", "4-aminobenzoic acid", "pyridine-3-carboxamide", "2-hydroxybenzoic acid",
    "(E)-but-2-enedioic acid", "3-methylbutyl acetate", "cyclohexane-1,4-dione", "2-chloro-2-methylpropane",
    "1-methyl-4-(prop-1-en-2-yl)cyclohexene", "2,2,4-trimethylpentane", "N,N-dimethylformamide",
    "(2R,3S,4R,5R)-2,3,4,5,6-pentahydroxyhexanal", "4-(2-aminoethyl)benzene-1,2-diol",
    "2-(diethylamino)-N-(2,6-dimethylphenyl)acetamide", "5-fluoro-1H-pyrimidine-2,4-dione",
    "1H-indol-3-ylacetic acid", "naphthalen-2-ol", "2-methoxy-4-prop-2-enylphenol", "hexanedioic acid",
    "4-methylbenzenesulfonic acid", "3-(3,4-dihydroxyphenyl)prop-2-enoic acid", "octadecanoic acid",
]


def load_sets(root: Path, n: int, seed: int = 0) -> dict[str, tuple[str, list[str]]]:
    """name -> (domain, strings); every set is held out from training."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    rng = random.Random(seed)

    def sample(xs):
        xs = list(xs)
        rng.shuffle(xs)
        return xs[:n]

    def col(rel, c):
        with open_data(root, rel) as f:
            return [r[c] for r in csv.DictReader(f)]

    sets = {}
    moses = sample(col("smiles/test.csv", "SMILES"))
    sets["smiles drug-like"] = ("smiles", moses)
    if has_data(root, "smiles/qm9.csv"):
        qm9 = [s for i, s in enumerate(col("smiles/qm9.csv", "SMILES")) if i % 10 == 0]
        sets["smiles qm9"] = ("smiles", sample(qm9))
    rxn = list(reactions(root, "test", limit=max(n, 500)))
    mols = sorted({m for r in rxn for m in r.replace(">>", ".").split(".") if len(m) > 1})
    sets["smiles chembl-like (USPTO)"] = ("smiles", sample(mols))
    diverse = [nci_style(s, rng) for s in sample(mols)[: n // 2] + moses[: n // 2]]
    sets["smiles diverse (Kekulé/NCI)"] = ("smiles", [s for s in diverse if s])
    sets["reactions"] = ("smiles", sample(rxn))
    sets["iupac (32 real names)"] = ("iupac", IUPAC_NAMES)
    sets["protein"] = ("protein", sample(proteins(root, heldout=True)))
    try:
        sets["protein (unseen organism)"] = ("protein", sample(unseen_proteome(root)))
    except ImportError:
        print("pyrodigal is not installed: no unseen-organism proteome (pip install opens1[dev])")
    dna = []
    for rel in (GENES, "sequences/1390.SAMEA104415756.OFHT01000022.fna"):
        if has_data(root, rel):
            with open_data(root, rel) as f:
                dna += [s for _, s in read_fasta(f)]
    sets["dna"] = ("dna", sample([s[i : i + 2000] for s in dna for i in range(0, len(s), 2000)]))
    prose = []
    for tex in sorted((root / "text").glob("*/*.tex")) if (root / "text").is_dir() else []:
        prose += [p for p in tex.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    import json

    if has_data(root, "qa/gsm8k_test.jsonl"):
        with open_data(root, "qa/gsm8k_test.jsonl") as f:
            prose += [(lambda d: d["question"] + "\n" + d["answer"])(json.loads(line)) for line in f if line.strip()]
    sets["prose"] = (None, sample(prose))
    return sets


def tiktoken_enc(path: Path, which: str):
    import tiktoken
    import tiktoken_ext.openai_public as pub
    from tiktoken.load import load_tiktoken_bpe

    from opens1.tokenizer.base import QWEN_PATTERN

    ranks = load_tiktoken_bpe(str(path))
    if which == "o200k":  # reuse tiktoken's own pattern, with the local file instead of a download
        orig = pub.load_tiktoken_bpe
        pub.load_tiktoken_bpe = lambda *a, **k: ranks
        try:
            spec = pub.o200k_base()
        finally:
            pub.load_tiktoken_bpe = orig
        return tiktoken.Encoding("o200k_local", pat_str=spec["pat_str"], mergeable_ranks=ranks, special_tokens={})
    return tiktoken.Encoding("qwen_local", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens={})


def count_dynamic(tok, domain, texts) -> int:
    """Tokens of domain strings inside explicit tags, not counting the two tag ids."""
    if domain is None:
        return sum(map(len, tok.encode_batch(texts)))
    a, b = TAGS[domain]
    return sum(len(ids) - 2 for ids in tok.encode_batch([a + t + b for t in texts]))


def mixed_documents(sets, n_docs: int, seed: int = 0) -> list[str]:
    """Prose paragraphs with molecules, reactions, proteins and DNA dropped in (auto-detected)."""
    rng = random.Random(seed)
    prose = sets["prose"][1]
    inserts = [s for name, (d, xs) in sets.items() if d is not None for s in xs[:50]]
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(4):
            parts.append(rng.choice(prose))
            parts.append("The sequence is " + rng.choice(inserts) + ", as reported.")
        docs.append("\n\n".join(parts))
    return docs


def throughput(fn, docs, repeat: int = 3) -> float:
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(docs)
        best = min(best, time.perf_counter() - t)
    return mb / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED) if SHARED.is_dir() else None, help="data root (default ../shared/data)")
    ap.add_argument("--tokenizer", default=None, help="OpenS1 tokenizer directory (default: bundled)")
    ap.add_argument("--n", type=int, default=1000, help="strings per set")
    ap.add_argument("--docs", type=int, default=200, help="mixed documents for the throughput test")
    args = ap.parse_args(argv)
    root = data_root(args.data)
    tokdir = root / "tokenizers"
    print(f"data root: {root}")
    t0 = time.perf_counter()
    sets = load_sets(root, args.n)
    print(f"loaded sets in {time.perf_counter() - t0:.1f}s: " + ", ".join(f"{k}={len(v[1])}" for k, v in sets.items()))

    ours = load_tokenizer(args.tokenizer)
    print(f"opens1 default: {ours!r}")
    counters = {"opens1 (default)": lambda d, xs: count_dynamic(ours, d, xs)}
    qwen_path = tokdir / "qwen.tiktoken"
    ours_q = None
    if qwen_path.is_file():
        t0 = time.perf_counter()
        ours_q = qwen3_tokenizer(qwen_path, domains=args.tokenizer)
        print(f"built Qwen3 BPE from tiktoken in {time.perf_counter() - t0:.1f}s: {ours_q!r}")
        counters["opens1 + qwen3 base"] = lambda d, xs: count_dynamic(ours_q, d, xs)
        qwen = tiktoken_enc(qwen_path, "qwen")
        counters["qwen3"] = lambda d, xs: sum(map(len, qwen.encode_ordinary_batch(xs)))
    if (tokdir / "o200k_base.tiktoken").is_file():
        o200k = tiktoken_enc(tokdir / "o200k_base.tiktoken", "o200k")
        counters["o200k"] = lambda d, xs: sum(map(len, o200k.encode_ordinary_batch(xs)))
    if (tokdir / "deepseek_v3_tokenizer.json").is_file():
        from tokenizers import Tokenizer

        ds = Tokenizer.from_file(str(tokdir / "deepseek_v3_tokenizer.json"))
        counters["deepseek-v3"] = lambda d, xs: sum(len(e.ids) for e in ds.encode_batch(xs, add_special_tokens=False))

    names = list(counters)
    table = {}
    print("\ncharacters per token (higher is better)")
    print(f"{'set':32s}" + "".join(f"{n:>21s}" for n in names))
    for set_name, (domain, xs) in sets.items():
        chars = sum(map(len, xs))
        row = {n: chars / max(1, counters[n](domain, xs)) for n in names}
        table[set_name] = row
        print(f"{set_name:32s}" + "".join(f"{row[n]:21.3f}" for n in names))

    d = table
    # prose through the dynamic tokenizer vs its base BPE alone: false detections would cost tokens
    prose = sets["prose"][1]
    base_only = {"opens1 (default)": ours}
    if ours_q is not None:
        base_only["opens1 + qwen3 base"] = ours_q
    for col, tk in base_only.items():
        plain = sum(len(e.ids) for e in tk.base.encode_batch(prose, add_special_tokens=False))
        ratio_prose = d["prose"][col] / (sum(map(len, prose)) / plain)
        goals = [
            ("SMILES drug-like >= 3.5", d["smiles drug-like"][col], d["smiles drug-like"][col] >= 3.5),
            ("SMILES chembl-like >= 3.0", d["smiles chembl-like (USPTO)"][col], d["smiles chembl-like (USPTO)"][col] >= 3.0),
            ("SMILES diverse > 2.64", d["smiles diverse (Kekulé/NCI)"][col], d["smiles diverse (Kekulé/NCI)"][col] > 2.64),
            ("prose no worse than its base BPE alone (ratio)", ratio_prose, ratio_prose >= 0.999),
        ]
        if "qwen3" in names:
            r = d["protein"][col] / d["protein"]["qwen3"]
            goals.append(("protein, held-out of the training organism, vs qwen3 (ratio)", r, r >= 1.3))
            if "protein (unseen organism)" in d:
                r = d["protein (unseen organism)"][col] / d["protein (unseen organism)"]["qwen3"]
                goals.append(("protein, unseen organism, >= 1.3x qwen3 (ratio)", r, r >= 1.3))
        print(f"\ngoals, {col} (domain vocabularies inside explicit tags):")
        for text, value, ok in goals:
            print(f"  [{'ok' if ok else 'MISS'}] {text}: {value:.3f}")

    docs = mixed_documents(sets, args.docs)
    print(f"\nthroughput on {len(docs)} mixed documents ({sum(map(len, docs)) / 1e6:.2f} MB); noisy on a shared machine")
    rates = {"opens1 default": throughput(ours.encode_batch, docs)}
    if ours_q is not None:
        rates["opens1 + qwen3 base"] = throughput(ours_q.encode_batch, docs)
        hf = ours_q.base  # plain HF tokenizers with Qwen3's BPE
        rates["HF tokenizers qwen3"] = throughput(lambda ds: hf.encode_batch(ds, add_special_tokens=False), docs)
    prose_docs = ["\n\n".join(sets["prose"][1][i : i + 8]) for i in range(0, len(sets["prose"][1]), 8)]
    if ours_q is not None:  # prose only: the cost of detection when there is nothing to detect
        rates["opens1 + qwen3 base, prose only"] = throughput(ours_q.encode_batch, prose_docs)
        rates["HF tokenizers qwen3, prose only"] = throughput(
            lambda ds: ours_q.base.encode_batch(ds, add_special_tokens=False), prose_docs)
    for k, v in rates.items():
        print(f"  {k:34s} {v:8.2f} MB/s")
    if "HF tokenizers qwen3" in rates:
        r = rates["opens1 + qwen3 base"] / rates["HF tokenizers qwen3"]
        print(f"  ratio opens1(qwen3 base) / HF tokenizers, mixed: {r:.2f}  [{'ok' if r >= 0.5 else 'MISS'}] goal >= 0.5")
        r = rates["opens1 + qwen3 base, prose only"] / rates["HF tokenizers qwen3, prose only"]
        print(f"  ratio opens1(qwen3 base) / HF tokenizers, prose only: {r:.2f}")
    linearity(ours, docs)
    return 0


def interns1_like(tok, directory: Path):
    """An Intern-S1-format directory (vocab.json, merges.txt, tokenizer_*.model, no config)
    from a tokenizer's base BPE and its SMILES/IUPAC/protein vocabularies, loaded back: it
    tokenizes with Intern-S1's rules (opens1/tokenizer/interns1.py)."""
    import json

    model = json.loads(tok.base.to_str())["model"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    for name, d in (("SMILES", "smiles"), ("IUPAC", "iupac"), ("FASTA", "protein")):
        (directory / f"tokenizer_{name}.model").write_bytes(tok.domain_models[d])
    return load_tokenizer(directory)


def per_char_us(fn, text: str, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
    return best / len(text) * 1e6


def linearity(ours, docs) -> None:
    """Microseconds per character at 10k and 160k characters: equal for a linear tokenizer."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        s1 = interns1_like(ours, Path(tmp) / "s1")
        inputs = {
            "[C@@H] run": lambda n: ("[C@@H]" * n)[:n],
            "unclosed [ brackets": lambda n: ("[a " * n)[:n],
            "protein run": lambda n: ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV" * n)[:n],
            "mixed documents": lambda n: ("\n\n".join(docs) * (1 + n // max(1, len("".join(docs)))))[:n],
        }
        tokenizers = {"opens1": ours.encode, "interns1 rules": s1.encode,
                      "HF tokenizers BPE": lambda t: ours.base.encode(t, add_special_tokens=False)}
        print("\nlinearity: microseconds per character at 10k and 160k characters (noisy on a shared machine)")
        print(f"{'input':24s}" + "".join(f"{k:>30s}" for k in tokenizers))
        for name, make in inputs.items():
            cells = []
            for fn in tokenizers.values():
                a, b = per_char_us(fn, make(10_000)), per_char_us(fn, make(160_000), repeat=1)
                cells.append(f"{a:7.2f} {b:7.2f} (x{b / a:4.2f})")
            print(f"{name:24s}" + "".join(f"{c:>30s}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
