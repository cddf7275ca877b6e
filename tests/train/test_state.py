"""A training state as tensors and JSON: the optimizer state flattened, RNG states as uint8."""

import json
import random

import numpy as np
import torch

from opens1.train import state
from tests.train.conftest import model_and_optimizer



def test_optimizer_state_flattens_to_tensors_and_json():
    m, opt = model_and_optimizer()
    osd = state.optimizer_state(m, opt)
    tensors, rest = state.flatten_optimizer_state(osd)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(rest)  # the non-tensor part is plain JSON
    back = state.unflatten_optimizer_state(tensors, rest)
    assert back["param_groups"][0]["betas"] == (0.9, 0.95)
    for p, entries in osd["state"].items():
        for k, v in entries.items():
            assert torch.equal(back["state"][p][k], v)


def test_rng_states_round_trip_as_uint8():
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    st = state.rng_state()
    assert all(v.dtype == torch.uint8 for v in st.values())
    a = (torch.rand(3), random.random(), np.random.rand())
    state.set_rng_state(st)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
