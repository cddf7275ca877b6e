"""SMILES -> SVG drawing (RDKit) for `/v1/opens1/molecule`. Runs in a worker process
(`serve/workers.py`): RDKit holds the GIL while it lays out and draws a molecule (about
1 s for 1000 atoms), so in the server process it would stall every other request.
Kept apart from the rest of the server so that its worker imports RDKit only."""

from __future__ import annotations

MAX_SMILES_LEN = 1000


def molecule_svg(_context, smiles: str, size: int = 320) -> str:
    """An SVG drawing of a SMILES string; a ValueError naming the problem for an empty,
    too long or invalid one. (`_context`: the worker pool's, unused.)"""
    from rdkit import Chem, RDLogger  # optional: rdkit (only its worker loads it)
    from rdkit.Chem.Draw import rdMolDraw2D  # optional: rdkit

    smiles = smiles.strip()
    if not smiles or len(smiles) > MAX_SMILES_LEN:
        raise ValueError(f"expected a SMILES string of 1..{MAX_SMILES_LEN} characters")
    RDLogger.DisableLog("rdApp.*")  # a bad SMILES is the client's problem, not log noise
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"{smiles!r} is not a valid SMILES string")
    drawer = rdMolDraw2D.MolDraw2DSVG(size, size)
    drawer.DrawMolecule(mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()
