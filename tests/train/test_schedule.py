import math

import pytest

from opens1.train.config import TrainConfig
from opens1.train.schedule import cosine_lr, grad_accum_at, lr_at, wsd_lr


def test_wsd_phases_by_hand():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=20, decay_frac=0.25, decay_shape="linear")
    # warm-up: (step+1)/4
    assert [wsd_lr(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # stable until the decay starts at 20 - 5 = 15
    assert all(wsd_lr(s, **kw) == 1.0 for s in range(4, 15))
    # linear decay over 5 steps: progress (s-15+1)/5
    assert wsd_lr(15, **kw) == pytest.approx(0.1 + 0.9 * 0.8)
    assert wsd_lr(19, **kw) == pytest.approx(0.1)  # the last step lands on min_lr


def test_wsd_sqrt_and_cosine_decay_shapes():
    kw = dict(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=10, decay_frac=0.4)
    # decay starts at step 6; step 6 has progress 1/4
    assert wsd_lr(6, decay_shape="sqrt", **kw) == pytest.approx(1 - math.sqrt(0.25))
    assert wsd_lr(6, decay_shape="cosine", **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    with pytest.raises(ValueError):
        wsd_lr(9, decay_shape="bogus", **kw)


def test_cosine_endpoints():
    assert cosine_lr(0, lr=1.0, min_lr=0.0, warmup_steps=2, max_steps=10) == 0.5
    assert cosine_lr(9, lr=1.0, min_lr=0.2, warmup_steps=2, max_steps=10) == pytest.approx(0.2)


def test_batch_warmup_ramp_and_switch():
    # linear ramp of micro-batches 1 -> 4 over 6 steps: 1 + 3*s//6
    assert [grad_accum_at(s, start=1, full=4, warmup_steps=6) for s in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    # Intern-S1's single switch: small batch first, then double
    assert [grad_accum_at(s, start=2, full=4, warmup_steps=1) for s in range(3)] == [2, 4, 4]
    assert grad_accum_at(0, start=0, full=3, warmup_steps=10) == 3  # no warm-up


def test_lr_at_follows_config():
    cfg = TrainConfig(lr=2.0, min_lr=0.0, warmup_steps=0, max_steps=10, schedule="constant")
    assert lr_at(7, cfg) == 2.0
    cfg = TrainConfig(lr=2.0, min_lr=0.5, warmup_steps=0, max_steps=10, decay_frac=0.1, decay_shape="linear")
    assert lr_at(9, cfg) == pytest.approx(0.5)
