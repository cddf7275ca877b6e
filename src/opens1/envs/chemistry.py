"""Chemistry environments on real molecules and reactions.

Molecule tasks (formula, weight, rings, atom counts, canonical SMILES) use MOSES
drug-like molecules: the MOSES test file is the held-out split and train drops
any molecule whose canonical SMILES is held out. QM9 property tasks (HOMO-LUMO
gap, dipole) use the hash rule on canonical SMILES. Reaction tasks use USPTO
(valT = train, testT = held-out, keyed by canonical product so a held-out
reaction is held out for both forward and retrosynthesis tasks).

Ground truth comes from RDKit (descriptors) or the dataset (DFT properties,
recorded reactions), so every reference is exact and checkable.
Difficulty is molecule size (heavy atoms), the natural driver of effort here.
"""

from __future__ import annotations

import csv
import random
from functools import lru_cache

from rdkit import Chem
from rdkit.Chem import Descriptors, rdMolDescriptors

from opens1.common.paths import has_data, open_data
from opens1.envs.base import ANSWER_FORMAT, Case, ItemEnv, split_items
from opens1.rewards.chem import canonical_smiles, mol_from_smiles

HARTREE_EV = 27.211386245988


def _size_difficulty(n_heavy: int, easy: int, medium: int) -> str:
    return "easy" if n_heavy <= easy else "medium" if n_heavy <= medium else "hard"


@lru_cache(maxsize=8)
def _read_smiles(root, relpath: str, limit: int) -> tuple[str, ...]:
    with open_data(root, relpath) as f:
        reader = csv.DictReader(f)
        out = []
        for row in reader:
            out.append(row["SMILES"])
            if len(out) >= limit:
                break
    return tuple(out)


def _mol_items(smiles_list, easy=15, medium=25) -> list[dict]:
    items = []
    for smi in smiles_list:
        key = canonical_smiles(smi)
        if key is None:
            continue
        n = mol_from_smiles(smi).GetNumHeavyAtoms()
        items.append({"key": key, "smiles": smi, "difficulty": _size_difficulty(n, easy, medium)})
    return items


@lru_cache(maxsize=4)
def _moses_split(root, limit_train: int, limit_heldout: int) -> dict:
    train = _mol_items(_read_smiles(root, "smiles/train.csv", limit_train))
    held = _mol_items(_read_smiles(root, "smiles/test.csv", limit_heldout))
    return split_items(train, held)


class MoleculeEnv(ItemEnv):
    """A question about one MOSES molecule; subclasses give `answer` and the question."""

    domain = "chemistry"
    limit_train, limit_heldout = 20_000, 2_000  # the whole embedded subset
    question = ""  # format string with {smiles}
    what = "value"

    @classmethod
    def available(cls, data_root=None) -> bool:
        return has_data(data_root, "smiles/train.csv") and has_data(data_root, "smiles/test.csv")

    def _load(self):
        return _moses_split(self.data_root, self.limit_train, self.limit_heldout)

    def answer(self, mol, item) -> str:
        raise NotImplementedError

    def shown_smiles(self, item) -> str:
        return item["smiles"]

    def _build(self, item, split, index) -> Case:
        mol = mol_from_smiles(item["smiles"])
        shown = self.shown_smiles(item)
        prompt = self.question.format(smiles=shown, **self.extra(item)) + " " + ANSWER_FORMAT.format(what=self.what)
        return self._make_case(split, index, item["key"], prompt, self.answer(mol, item), item["difficulty"],
                               source="moses", smiles=shown)

    def extra(self, item) -> dict:
        return {}

    def sft_response(self, case: Case) -> str:
        return f"{self.explain(case)}\nAnswer: {case.reference}"

    def explain(self, case: Case) -> str:
        return f"Reading the SMILES {case.meta['smiles']} atom by atom."


class FormulaEnv(MoleculeEnv):
    name, kind, what = "chem/formula", "formula", "formula"
    question = "What is the molecular formula (Hill notation) of the molecule with SMILES {smiles}?"

    def answer(self, mol, item):
        return rdMolDescriptors.CalcMolFormula(mol)

    def explain(self, case):
        mol = Chem.AddHs(mol_from_smiles(case.meta["smiles"]))
        counts: dict[str, int] = {}
        for a in mol.GetAtoms():
            counts[a.GetSymbol()] = counts.get(a.GetSymbol(), 0) + 1
        parts = ", ".join(f"{n} {el}" for el, n in sorted(counts.items()))
        return f"Counting atoms in {case.meta['smiles']} including implicit hydrogens: {parts}."


class MolWeightEnv(MoleculeEnv):
    name, kind, what = "chem/mol_weight", "number", "weight in g/mol"
    verify_options = {"rel_tol": 1e-3, "unit": "g/mol"}
    question = ("What is the average molecular weight in g/mol of the molecule with SMILES {smiles}? "
                "Give two decimals.")

    def answer(self, mol, item):
        return f"{Descriptors.MolWt(mol):.2f} g/mol"

    def explain(self, case):
        formula = rdMolDescriptors.CalcMolFormula(mol_from_smiles(case.meta["smiles"]))
        return f"The formula is {formula}; summing standard atomic weights gives {case.reference}."


class CountEnv(MoleculeEnv):
    """A count over one molecule, answered directly ("Answer: 3"), answer-balanced: train cycles through the answers, held-out keeps at most
    `heldout_per_class` molecules per answer, so always giving the most common answer
    scores about 1/5 instead of 0.42."""

    balanced, heldout_per_class, train_per_class = True, 130, 2500

    def item_answer(self, item) -> str:
        return self.answer(mol_from_smiles(item["smiles"]), item)

    def sft_response(self, case: Case) -> str:
        # The count is the whole answer: a sentence that repeats the SMILES would make most
        # of the supervised tokens a copy of the prompt.
        return f"Answer: {case.reference}"


class RingCountEnv(CountEnv):
    name, kind, what = "chem/ring_count", "number", "integer"
    question = "How many rings (smallest set of smallest rings) does the molecule with SMILES {smiles} have?"

    def answer(self, mol, item):
        return str(rdMolDescriptors.CalcNumRings(mol))


class AromaticRingEnv(CountEnv):
    name, kind, what = "chem/aromatic_rings", "number", "integer"
    question = "How many aromatic rings does the molecule with SMILES {smiles} have?"

    def answer(self, mol, item):
        return str(rdMolDescriptors.CalcNumAromaticRings(mol))


class AtomCountEnv(CountEnv):
    """Atoms of one heteroatom element (N, O, S, halogens; C only in a molecule without
    any), the element fixed per molecule. Carbon counts of drug-like molecules run to 25+,
    which a tiny model cannot count in one token; heteroatom counts are 1-6."""

    name, kind, what = "chem/atom_count", "number", "integer"
    question = "How many {element} atoms does the molecule with SMILES {smiles} contain?"

    def _element(self, item) -> str:
        mol = mol_from_smiles(item["smiles"])
        elements = sorted({a.GetSymbol() for a in mol.GetAtoms()} - {"C"}) or ["C"]
        return random.Random(item["key"]).choice(elements)  # fixed per molecule

    def extra(self, item):
        return {"element": self._element(item)}

    def answer(self, mol, item):
        el = self._element(item)
        return str(sum(a.GetSymbol() == el for a in mol.GetAtoms()))


class CanonicalSmilesEnv(MoleculeEnv):
    """Rewrite a randomised SMILES in RDKit canonical form (exact string match:
    any equivalent SMILES would be trivially the input itself)."""

    name, kind, what = "chem/canonical_smiles", "exact", "canonical SMILES"
    verify_options = {"case_sensitive": True}  # aromatic c vs aliphatic C differ
    question = "Write the RDKit canonical SMILES (no stereochemistry) of the molecule {smiles}."

    def shown_smiles(self, item):
        mol = mol_from_smiles(item["smiles"])
        seed = random.Random(item["key"]).randrange(1 << 30)  # fixed per molecule
        return Chem.MolToRandomSmilesVect(mol, 1, randomSeed=seed, isomericSmiles=False)[0]

    def answer(self, mol, item):
        return item["key"]

    def explain(self, case):
        return "Canonicalising the atom order with RDKit's algorithm."


# --- QM9 -------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _qm9_split(root, limit: int) -> dict:
    items = []
    with open_data(root, "smiles/qm9.csv") as f:
        for row in csv.DictReader(f):
            key = canonical_smiles(row["SMILES"])
            if key is None:
                continue
            n = mol_from_smiles(row["SMILES"]).GetNumHeavyAtoms()
            items.append({"key": key, "smiles": row["SMILES"], "difficulty": _size_difficulty(n, 6, 8),
                          "gap_ev": float(row["HOMO_LUMO_gap_au"]) * HARTREE_EV,
                          "dipole": float(row["Dipole_debye"])})
            if len(items) >= limit:
                break
    return split_items(items)


class QM9Env(ItemEnv):
    domain = "chemistry"
    kind = "number"
    limit = 4000
    field_name, unit, question = "", "", ""

    @classmethod
    def available(cls, data_root=None) -> bool:
        return has_data(data_root, "smiles/qm9.csv")

    def _load(self):
        return _qm9_split(self.data_root, self.limit)

    def _build(self, item, split, index):
        prompt = self.question.format(smiles=item["smiles"]) + " " + ANSWER_FORMAT.format(what=f"value in {self.unit}")
        ref = f"{item[self.field_name]:.4g} {self.unit}"
        return self._make_case(split, index, item["key"], prompt, ref, item["difficulty"], source="qm9",
                               smiles=item["smiles"])

    def sft_response(self, case):
        return f"From the B3LYP/6-31G(2df,p) equilibrium geometry of {case.meta['smiles']}.\nAnswer: {case.reference}"


class QM9GapEnv(QM9Env):
    name, field_name, unit = "chem/qm9_gap", "gap_ev", "eV"
    verify_options = {"rel_tol": 0.05}
    question = "Estimate the DFT (B3LYP) HOMO-LUMO gap of the molecule {smiles}, in eV."


class QM9DipoleEnv(QM9Env):
    name, field_name, unit = "chem/qm9_dipole", "dipole", "D"
    verify_options = {"rel_tol": 0.1, "abs_tol": 0.05}
    question = "Estimate the DFT (B3LYP) dipole moment of the molecule {smiles}, in debye (D)."


# --- USPTO reactions ---------------------------------------------------------------

def _strip_maps(smiles: str) -> str | None:
    """Canonical (map-free) SMILES of a "."-joined set, or None if any part fails."""
    parts = [canonical_smiles(p) for p in smiles.split(".") if p]
    return ".".join(sorted(parts)) if parts and all(parts) else None


def _reaction_items(root, relpath: str, limit: int) -> list[dict]:
    items = []
    with open_data(root, relpath) as f:
        for row in csv.DictReader(f):
            product, reactants = _strip_maps(row["input"]), _strip_maps(row["target"])
            if product is None or reactants is None:
                continue
            n = mol_from_smiles(product).GetNumHeavyAtoms()
            items.append({"key": product, "product": product, "reactants": reactants,
                          "difficulty": _size_difficulty(n, 15, 25)})
            if len(items) >= limit:
                break
    return items


@lru_cache(maxsize=4)
def _uspto_split(root, limit_train: int, limit_heldout: int) -> dict:
    return split_items(_reaction_items(root, "reactions/uspto_valT.csv", limit_train),
                       _reaction_items(root, "reactions/uspto_testT.csv", limit_heldout))


class ReactionEnv(ItemEnv):
    domain = "chemistry"
    limit_train, limit_heldout = 1000, 300

    @classmethod
    def available(cls, data_root=None) -> bool:
        return has_data(data_root, "reactions/uspto_valT.csv") and has_data(data_root, "reactions/uspto_testT.csv")

    def _load(self):
        return _uspto_split(self.data_root, self.limit_train, self.limit_heldout)


class ForwardReactionEnv(ReactionEnv):
    name, kind = "chem/reaction_product", "smiles"
    description = "USPTO forward prediction: reactants -> main product"

    def _build(self, item, split, index):
        prompt = (f"Predict the main product of the reaction of these reactants: {item['reactants']}. "
                  + ANSWER_FORMAT.format(what="product SMILES"))
        return self._make_case(split, index, item["key"], prompt, item["product"], item["difficulty"],
                               source="uspto")

    def sft_response(self, case):
        return f"The reactants combine to give <SMILES>{case.reference}</SMILES>.\nAnswer: {case.reference}"


class RetrosynthesisEnv(ReactionEnv):
    name, kind = "chem/retrosynthesis", "reaction"
    verify_options = {"side": "reactants"}
    description = "USPTO single-step retrosynthesis: product -> reactant set"

    def _build(self, item, split, index):
        prompt = (f"Propose the reactants (SMILES joined by '.') for one step that makes {item['product']}. "
                  + ANSWER_FORMAT.format(what="reactant SMILES"))
        return self._make_case(split, index, item["key"], prompt, item["reactants"], item["difficulty"],
                               source="uspto")

    def sft_response(self, case):
        return f"Disconnecting the product gives these precursors.\nAnswer: {case.reference}"


# the environments this module contributes to the registry (opens1.envs.registry)
ENVS = (
    FormulaEnv, MolWeightEnv, RingCountEnv, AromaticRingEnv, AtomCountEnv, CanonicalSmilesEnv,
    QM9GapEnv, QM9DipoleEnv, ForwardReactionEnv, RetrosynthesisEnv,
)
