"""GET /v1/opens1/molecule?smiles=...: a SMILES string drawn as SVG (RDKit, in its own
worker pool: serve/molecule.py), for the web UI."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from opens1.serve.auth import get_state, require_key
from opens1.serve.bridge import in_worker
from opens1.serve.molecule import MAX_SMILES_LEN, molecule_svg
from opens1.serve.protocol import APIError
from opens1.serve.state import ServerState

router = APIRouter(dependencies=[Depends(require_key)])


@router.get("/v1/opens1/molecule")
async def molecule(smiles: str = "", state: ServerState = Depends(get_state)):
    smiles = smiles.strip()
    if not smiles or len(smiles) > MAX_SMILES_LEN:
        raise APIError(400, f"smiles: expected a SMILES string of 1..{MAX_SMILES_LEN} characters", param="smiles")
    try:
        svg = await in_worker(state.molecule, molecule_svg, smiles)
    except ValueError as e:
        raise APIError(400, f"smiles: {e}", param="smiles", code="invalid_smiles") from None
    return Response(svg, media_type="image/svg+xml")
