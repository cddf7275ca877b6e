"""ops.rms_norm against transformers' formula, in float32 and bf16, with and without a weight."""

import pytest
import torch

from opens1.ops.norm import rms_norm, rms_norm_reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_matches_reference(dtype, with_weight):
    torch.manual_seed(0)
    x = (3 * torch.randn(4, 5, 16)).to(dtype)
    w = (1 + 0.1 * torch.randn(16)).to(dtype) if with_weight else None
    got, ref = rms_norm(x, w, 1e-6), rms_norm_reference(x, w, 1e-6)
    assert got.dtype == ref.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got, ref, atol=tol, rtol=tol)


def test_low_precision_input_with_float32_weight_follows_hf():
    # bf16 activations, float32 weight (autocast training): normalise in float32, cast, then scale
    torch.manual_seed(1)
    x = torch.randn(3, 8).to(torch.bfloat16)
    w = 1 + 0.1 * torch.randn(8)
    got = rms_norm(x, w, 1e-6)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, rms_norm_reference(x, w, 1e-6))
