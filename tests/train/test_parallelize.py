"""parallelize(): compiled decoder layers train like eager ones (MoE included, float32 on
CPU, where torch._grouped_mm cannot be traced and runs eagerly inside the graph)."""

import copy

import pytest
import torch

from opens1.config import get_preset
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.train.losses import head_weight, lm_loss
from opens1.train.parallelize import parallelize


@pytest.mark.slow
def test_compiled_layers_match_eager_loss_and_grads():
    torch.manual_seed(0)
    eager = S1ForConditionalGeneration(get_preset("debug").replace(vision=None, timeseries=None))
    compiled = parallelize(copy.deepcopy(eager), compile=True, fsdp=False)
    ids = torch.randint(0, eager.config.text.vocab_size, (2, 24))
    losses = []
    for m in (eager, compiled):
        out = m(input_ids=ids, return_hidden=True, output_router_logits=True)
        loss = lm_loss(out.hidden_states, head_weight(m), ids) + 0.001 * out.aux_loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
