"""A labelled set of (prediction, reference, equivalent?) pairs for measuring verifiers.

Built from real data with a seed, so the pairs are unseen by construction (the
verifiers were not tuned on them) and reproducible:
- smiles: RDKit-randomised SMILES of MOSES molecules (fragment order shuffled,
  written inside prose), against a different molecule or a one-atom mutant;
- formula: element order shuffled, LaTeX subscripts, hydrate dots, against a
  formula with one count changed;
- reaction: USPTO reactant sets re-ordered, randomised, atom maps kept, against
  one reactant dropped or swapped;
- math: MATH-500 answers re-typeset (\\dfrac, spaces, boxed vs "Answer:"), against
  another problem's answer;
- number: values converted between units (kJ/mol vs J/mol, kPa vs atm, nm vs m),
  against off-by-a-few-percent values or wrong dimensions;
- choice and sequence: reformatted letters and FASTA, against other letters and
  point mutants.
Each pair is a dict: kind, prediction, reference, options, label (1 = equivalent).
"""

from __future__ import annotations

import csv
import json
import random
import re

from rdkit import Chem

from opens1.common.paths import open_data
from opens1.rewards.chem import canonical_smiles, mol_from_smiles

_PROSE = ["Answer: {x}", "The product is {x}.", "<think>Let me think: maybe CCO.</think>\nAnswer: {x}",
          "So the final answer is \\boxed{{{x}}}", "I believe the molecule is <SMILES>{x}</SMILES>."]


def _moses(n: int, rng: random.Random) -> list[str]:
    with open_data(None, "smiles/test.csv") as f:
        rows = [r["SMILES"] for r in csv.DictReader(f)]
    rng.shuffle(rows)
    return [s for s in rows if mol_from_smiles(s) is not None][:n]


def _random_smiles(smiles: str, rng: random.Random) -> str:
    mol = mol_from_smiles(smiles)
    if rng.random() < 0.3:  # Kekulé form: explicit single/double bonds instead of aromatic atoms
        mol = Chem.Mol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
        return Chem.MolToSmiles(mol, kekuleSmiles=True, canonical=False,
                                rootedAtAtom=rng.randrange(mol.GetNumAtoms()))
    return Chem.MolToRandomSmilesVect(mol, 1, randomSeed=rng.randrange(1 << 30))[0]


def _mutant(smiles: str, rng: random.Random) -> str | None:
    """Replace one carbon by nitrogen (a different molecule, if it still parses)."""
    positions = [i for i, ch in enumerate(smiles) if ch == "C" and smiles[i + 1:i + 2] != "l"]
    rng.shuffle(positions)
    for i in positions:
        cand = smiles[:i] + "N" + smiles[i + 1:]
        if canonical_smiles(cand) not in (None, canonical_smiles(smiles)):
            return cand
    return None


def smiles_pairs(n: int, rng: random.Random) -> list[dict]:
    mols = _moses(2 * n, rng)
    out = []
    for i in range(n):
        a, b = mols[2 * i], mols[2 * i + 1]
        tmpl = rng.choice(_PROSE)
        out.append({"kind": "smiles", "prediction": tmpl.format(x=_random_smiles(a, rng)), "reference": a,
                    "options": {}, "label": 1})
        wrong = _mutant(a, rng) if rng.random() < 0.5 else b
        out.append({"kind": "smiles", "prediction": rng.choice(_PROSE).format(x=wrong or b), "reference": a,
                    "options": {}, "label": 0})
    return out


def _formula_of(smiles: str) -> dict[str, int]:
    mol = Chem.AddHs(mol_from_smiles(smiles))
    counts: dict[str, int] = {}
    for atom in mol.GetAtoms():
        counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
    return counts


def _write_formula(counts: dict[str, int], rng: random.Random, latex: bool = False) -> str:
    items = list(counts.items())
    rng.shuffle(items)
    sub = (lambda k: f"_{{{k}}}") if latex else str
    return "".join(el + (sub(k) if k > 1 else "") for el, k in items)


def formula_pairs(n: int, rng: random.Random) -> list[dict]:
    from rdkit.Chem import rdMolDescriptors

    out = []
    for smi in _moses(n, rng):
        hill = rdMolDescriptors.CalcMolFormula(mol_from_smiles(smi))
        counts = _formula_of(smi)
        pred = _write_formula(counts, rng, latex=rng.random() < 0.3)
        if rng.random() < 0.2:  # a hydrate on both sides
            pred, hill = pred + "·2H2O", hill + "·2H2O"
        out.append({"kind": "formula", "prediction": f"Answer: {pred}", "reference": hill, "options": {}, "label": 1})
        bad = dict(counts)
        el = rng.choice(sorted(bad))
        bad[el] = bad[el] + rng.choice([-1, 1]) if bad[el] > 1 else bad[el] + 1
        out.append({"kind": "formula", "prediction": f"The formula is {_write_formula(bad, rng)}.",
                    "reference": hill, "options": {}, "label": 0})
    return out


def reaction_pairs(n: int, rng: random.Random) -> list[dict]:
    with open_data(None, "reactions/uspto_testT.csv") as f:
        rows = list(csv.DictReader(f))
    rng.shuffle(rows)
    out = []
    for row in rows[:n]:
        parts = row["target"].split(".")
        if len(parts) < 2:
            parts = parts + ["O"]
        shuffled = parts[:]
        rng.shuffle(shuffled)
        eq = ".".join(_random_smiles(p, rng) if rng.random() < 0.5 else p for p in shuffled)
        ref = ".".join(parts)
        out.append({"kind": "reaction", "prediction": f"Answer: {eq}", "reference": ref, "options": {}, "label": 1})
        bad = shuffled[:-1] if rng.random() < 0.5 else shuffled[:-1] + [rows[-1]["target"].split(".")[0]]
        if _same_set(bad, parts):
            bad = shuffled[:-1]
        out.append({"kind": "reaction", "prediction": f"Answer: {'.'.join(bad)}", "reference": ref, "options": {},
                    "label": 0})
    return out


def _same_set(a: list[str], b: list[str]) -> bool:
    return sorted(canonical_smiles(x) or x for x in a) == sorted(canonical_smiles(x) or x for x in b)


def math_pairs(n: int, rng: random.Random) -> list[dict]:
    with open_data(None, "qa/math500_test.jsonl") as f:
        rows = [json.loads(line) for line in f]
    simple = [r["answer"] for r in rows if len(r["answer"]) < 40 and "\\text" not in r["answer"]]
    rng.shuffle(simple)
    out = []
    for i in range(n):
        ans = simple[i]
        pred = ans.replace("\\frac", "\\dfrac") if rng.random() < 0.5 else ans.replace(" ", "")
        m = re.fullmatch(r"\\frac\{(\d+)\}\{(2|4|5|8|10)\}", ans)
        if m and rng.random() < 0.7:  # an exact decimal for a simple fraction
            pred = f"{int(m.group(1)) / int(m.group(2)):g}"
        elif re.fullmatch(r"-?\d+", ans) and rng.random() < 0.5:
            pred = f"x = {ans}"
        tmpl = rng.choice(["\\boxed{{{x}}}", "Answer: ${x}$",
                           "<think>hmm</think>The final answer is $\\boxed{{{x}}}$."])
        out.append({"kind": "math", "prediction": tmpl.format(x=pred), "reference": ans, "options": {}, "label": 1})
        other = next(a for a in simple[i + 1:] + simple[:i] if a.replace(" ", "") != ans.replace(" ", ""))
        out.append({"kind": "math", "prediction": f"Answer: ${other}$", "reference": ans, "options": {}, "label": 0})
    return out


# (reference unit, equivalent unit, factor: 1 reference unit = factor equivalent units)
_CONVERSIONS = [("kJ/mol", "J/mol", 1e3), ("kJ mol^-1", "J mol^{-1}", 1e3), ("atm", "kPa", 101.325),
                ("nm", "m", 1e-9), ("m/s", "km/h", 3.6), ("eV", "meV", 1e3), ("g", "mg", 1e3),
                ("L", "mL", 1e3), ("kcal/mol", "kJ/mol", 4.184), ("Pa", "bar", 1e-5)]


def _fmt(x: float, rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"{x:.6g}"
    if style == 1:
        return f"{x:.5e}"
    m, e = f"{x:.5e}".split("e")
    return f"{m} \\times 10^{{{int(e)}}}"


def number_pairs(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        ref_u, eq_u, factor = rng.choice(_CONVERSIONS)
        v = round(rng.uniform(0.5, 500), 3)
        pred = f"Answer: {_fmt(v * factor, rng)} {eq_u}"
        out.append({"kind": "number", "prediction": pred, "reference": f"{v} {ref_u}",
                    "options": {"rel_tol": 1e-3}, "label": 1})
        if rng.random() < 0.5:
            bad = f"Answer: {_fmt(v * factor * rng.choice([0.95, 1.05, 10.0]), rng)} {eq_u}"
        else:  # right number, wrong dimension
            bad = f"Answer: {v} {rng.choice(['s', 'kg', 'K'])}"
        out.append({"kind": "number", "prediction": bad, "reference": f"{v} {ref_u}",
                    "options": {"rel_tol": 1e-3}, "label": 0})
    return out


def choice_pairs(n: int, rng: random.Random) -> list[dict]:
    forms = ["The answer is ({x}).", "Answer: {x}", "\\boxed{{{x}}}", "<think>A or B?</think>\nAnswer: ({x})",
             "Final answer: **{x}**"]
    out = []
    for _ in range(n):
        ref = rng.choice("ABCD")
        wrong = rng.choice([c for c in "ABCD" if c != ref])
        out.append({"kind": "choice", "prediction": rng.choice(forms).format(x=ref), "reference": ref,
                    "options": {}, "label": 1})
        out.append({"kind": "choice", "prediction": rng.choice(forms).format(x=wrong), "reference": ref,
                    "options": {}, "label": 0})
    return out


def sequence_pairs(n: int, rng: random.Random) -> list[dict]:
    seqs, cur = [], []
    with open_data(None, "sequences/938293.PRJEB85.HG003687.faa") as f:
        for line in f:
            if line.startswith(">"):
                if cur:
                    seqs.append("".join(cur).rstrip("*"))
                cur = []
            else:
                cur.append(line.strip())
    rng.shuffle(seqs)
    out = []
    for s in seqs[:n]:
        s = s[:120]
        wrapped = "\n".join(s[i:i + 60] for i in range(0, len(s), 60))
        pred = rng.choice([f"<FASTA>{wrapped}</FASTA>", f"Answer: {s.lower()}", f">pred\n{wrapped}"])
        out.append({"kind": "sequence", "prediction": pred, "reference": s, "options": {}, "label": 1})
        i = rng.randrange(len(s))
        mut = s[:i] + ("A" if s[i] != "A" else "G") + s[i + 1:]
        out.append({"kind": "sequence", "prediction": f"Answer: {mut}", "reference": s, "options": {}, "label": 0})
    return out


def make_pairs(n_per_kind: int = 10, seed: int = 0) -> list[dict]:
    """2 * n_per_kind pairs (half equivalent) for each of 7 verifier kinds."""
    rng = random.Random(seed)
    out = []
    for fn in (smiles_pairs, formula_pairs, reaction_pairs, math_pairs, number_pairs, choice_pairs, sequence_pairs):
        out += fn(n_per_kind, rng)
    return out
