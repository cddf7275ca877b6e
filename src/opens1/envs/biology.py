"""Biology environments on a real bacterial proteome and real genes.

Protein tasks (length, average mass, charged residues) use the 2,100 predicted
proteins of one proteome; held-out = hash(sequence) % 10 == 0. DNA tasks
(translation, reverse complement, GC content) cut windows out of 100 real genes;
the split is by *gene* (`split_key`), so overlapping windows of a held-out gene
never reach training. Difficulty is window or protein length.

References are computed here from first principles (standard genetic code,
average residue masses), so they are exact and need no library.
"""

from __future__ import annotations

from functools import lru_cache

from opens1.common.paths import has_data, open_data
from opens1.envs.base import ANSWER_FORMAT, ItemEnv, is_heldout, split_items

PROTEOME = "sequences/938293.PRJEB85.HG003687.faa"
GENES = "sequences/CP040672.1.genes_100.fna"

# Standard genetic code, codons enumerated in TCAG order (TTT, TTC, TTA, TTG, TCT, ...).
_BASES = "TCAG"
_AMINO = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
CODON_TABLE = {a + b + c: _AMINO[16 * i + 4 * j + k]
               for i, a in enumerate(_BASES) for j, b in enumerate(_BASES) for k, c in enumerate(_BASES)}
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")

# Average residue masses (Da, residue = amino acid minus water); + one water per chain.
RESIDUE_MASS = {
    "A": 71.0788, "R": 156.1875, "N": 114.1038, "D": 115.0886, "C": 103.1388, "E": 129.1155,
    "Q": 128.1307, "G": 57.0519, "H": 137.1411, "I": 113.1594, "L": 113.1594, "K": 128.1741,
    "M": 131.1926, "F": 147.1766, "P": 97.1167, "S": 87.0782, "T": 101.1051, "W": 186.2132,
    "Y": 163.1760, "V": 99.1326,
}
WATER = 18.01528


def translate(dna: str) -> str:
    """Protein of an in-frame DNA sequence (stop = '*', unknown codon = 'X')."""
    return "".join(CODON_TABLE.get(dna[i:i + 3], "X") for i in range(0, len(dna) - 2, 3))


def reverse_complement(dna: str) -> str:
    return dna.upper().translate(_COMPLEMENT)[::-1]


def protein_mass(seq: str) -> float:
    return sum(RESIDUE_MASS[a] for a in seq) + WATER


def read_fasta(root, relpath: str) -> list[tuple[str, str]]:
    records, name, chunks = [], None, []
    with open_data(root, relpath) as f:
        for line in f:
            line = line.strip()
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(chunks)))
                name, chunks = line[1:].split()[0], []
            elif line:
                chunks.append(line)
    if name is not None:
        records.append((name, "".join(chunks)))
    return records


@lru_cache(maxsize=4)
def _protein_split(root) -> dict:
    items = []
    for pid, seq in read_fasta(root, PROTEOME):
        seq = seq.rstrip("*")
        if not seq or any(a not in RESIDUE_MASS for a in seq):
            continue  # skip the few with ambiguous residues (X), whose mass is undefined
        diff = "easy" if len(seq) < 150 else "medium" if len(seq) < 400 else "hard"
        items.append({"key": seq, "id": pid, "seq": seq, "difficulty": diff})
    return split_items(items)


class ProteinEnv(ItemEnv):
    domain = "biology"
    kind = "number"
    question, what = "", "integer"

    @classmethod
    def available(cls, data_root=None) -> bool:
        return has_data(data_root, PROTEOME)

    def _load(self):
        return _protein_split(self.data_root)

    def value(self, seq: str) -> str:
        raise NotImplementedError

    def _build(self, item, split, index):
        # The FASTA tag routes the sequence to the tokenizer's protein vocabulary.
        prompt = (self.question + f"\n<FASTA>{item['seq']}</FASTA>\n" + ANSWER_FORMAT.format(what=self.what))
        return self._make_case(split, index, item["key"], prompt, self.value(item["seq"]), item["difficulty"],
                               source="proteome", protein_id=item["id"])

    def sft_response(self, case):
        return f"{self.explain(case)}\nAnswer: {case.reference}"

    def explain(self, case) -> str:
        return "Counting residues in the sequence."


class ProteinLengthEnv(ProteinEnv):
    name = "bio/protein_length"
    question = "How many amino acid residues long is this protein?"

    def value(self, seq):
        return str(len(seq))


class ProteinWeightEnv(ProteinEnv):
    name, what = "bio/protein_weight", "mass in Da"
    verify_options = {"rel_tol": 1e-3, "unit": "Da"}
    question = "What is the average molecular mass of this protein in daltons (Da), to one decimal?"

    def value(self, seq):
        return f"{protein_mass(seq):.1f} Da"

    def explain(self, case):
        return "Summing average residue masses and adding one water for the chain termini."


class ChargedResiduesEnv(ProteinEnv):
    name = "bio/charged_residues"
    question = "How many charged residues (D, E, K, R) does this protein contain?"

    def value(self, seq):
        return str(sum(seq.count(a) for a in "DEKR"))

    def explain(self, case):
        return "Counting aspartate (D), glutamate (E), lysine (K) and arginine (R)."


# --- DNA windows ---------------------------------------------------------------------

_WINDOW_CODONS = {"easy": 8, "medium": 25, "hard": 80}


@lru_cache(maxsize=4)
def _gene_split(root) -> dict:
    items = []
    for gid, dna in read_fasta(root, GENES):
        dna = dna.upper()
        if set(dna) - set("ACGT"):
            continue
        # In-frame windows starting at codon boundaries, so translation is well defined.
        for diff, n in _WINDOW_CODONS.items():
            # Up to 6 non-overlapping in-frame windows per gene and difficulty.
            for w in range(6):
                start = 3 * n * w
                if start + 3 * n > len(dna):
                    break
                window = dna[start:start + 3 * n]
                items.append({"key": f"{gid}:{start}:{n}", "split_key": gid, "gene": gid,
                              "dna": window, "difficulty": diff})
    return split_items(items)


class DNAEnv(ItemEnv):
    domain = "biology"

    @classmethod
    def available(cls, data_root=None) -> bool:
        return has_data(data_root, GENES)

    def _load(self):
        return _gene_split(self.data_root)

    def _build(self, item, split, index):
        prompt = self.question + f"\n<DNA>{item['dna']}</DNA>\n" + ANSWER_FORMAT.format(what=self.what)
        return self._make_case(split, index, item["key"], prompt, self.value(item["dna"]), item["difficulty"],
                               source="genes", gene=item["gene"])

    def sft_response(self, case):
        return f"{self.explain(case)}\nAnswer: {case.reference}"


class TranslateEnv(DNAEnv):
    name, kind, what = "bio/translate", "sequence", "protein sequence"
    question = "Translate this in-frame coding DNA into its protein sequence (one-letter codes, standard code)."

    def value(self, dna):
        return translate(dna)

    def explain(self, case):
        return "Reading codon by codon with the standard genetic code."


class ReverseComplementEnv(DNAEnv):
    name, kind, what = "bio/reverse_complement", "sequence", "DNA sequence"
    question = "Give the reverse complement of this DNA sequence."

    def value(self, dna):
        return reverse_complement(dna)

    def explain(self, case):
        return "Complementing each base (A-T, C-G) and reversing the order."


class GCContentEnv(DNAEnv):
    name, kind, what = "bio/gc_content", "number", "percent"
    verify_options = {"rel_tol": 0.0, "abs_tol": 0.051, "unit": "%"}
    question = "What is the GC content of this DNA sequence, in percent to one decimal?"

    def value(self, dna):
        return f"{100.0 * (dna.count('G') + dna.count('C')) / len(dna):.1f}%"

    def explain(self, case):
        return "Counting G and C bases and dividing by the length."


# --- GC count in short windows -------------------------------------------------------

GC_WINDOW = 12


@lru_cache(maxsize=4)
def _gc_windows(root) -> dict:
    """12-base windows of the 100 genes, split by gene. Train windows start every 3 bases,
    held-out ones every 6 (half overlapping), so the held-out split has ~1,400 windows."""
    items = []
    for gid, dna in read_fasta(root, GENES):
        dna = dna.upper()
        if set(dna) - set("ACGT"):
            continue
        stride = GC_WINDOW // 2 if is_heldout(gid) else GC_WINDOW // 4
        for start in range(0, len(dna) - GC_WINDOW + 1, stride):
            window = dna[start:start + GC_WINDOW]
            gc = window.count("G") + window.count("C")
            # difficulty: how far the count is from the middle (mixed windows are the long counts)
            items.append({"key": f"gc|{gid}:{start}", "split_key": gid, "gene": gid, "dna": window,
                          "gc": gc, "difficulty": "easy" if gc <= 4 else "medium" if gc <= 7 else "hard"})
    return split_items(items)


class GCCountEnv(ItemEnv):
    """How many G or C bases a 12-base stretch of a real gene holds: the count behind GC
    content, answered directly. Answer-balanced (train cycles through the counts, held-out
    keeps at most 100 windows per count), so a constant answer scores about 0.13."""

    name, domain, kind, what = "bio/gc_count", "biology", "number", "integer"
    question = "How many G or C bases does this DNA sequence contain?"
    balanced, heldout_per_class, train_per_class = True, 100, 2500

    @classmethod
    def available(cls, data_root=None) -> bool:
        return has_data(data_root, GENES)

    def _load(self):
        return _gc_windows(self.data_root)

    def item_answer(self, item) -> str:
        return str(item["gc"])

    def _build(self, item, split, index):
        prompt = self.question + f"\n<DNA>{item['dna']}</DNA>\n" + ANSWER_FORMAT.format(what=self.what)
        return self._make_case(split, index, item["key"], prompt, str(item["gc"]), item["difficulty"],
                               source="genes", gene=item["gene"])

    def sft_response(self, case):
        return f"Answer: {case.reference}"


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (
    ProteinLengthEnv, ProteinWeightEnv, ChargedResiduesEnv, TranslateEnv, ReverseComplementEnv,
    GCContentEnv, GCCountEnv,
)
