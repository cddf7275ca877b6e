"""Shared fixtures for the training tests: the real tokenizer, real documents (GSM8K and
SMILES from the embedded subset) and the smallest model preset ("debug")."""

from __future__ import annotations

import pytest
import torch


def model_and_optimizer(width: int = 8):
    """A two-layer model and an AdamW that has taken one step: state worth saving."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Linear(width, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.95))
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    return m, opt


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models on a shared 2-core machine: one thread avoids oversubscription stalls
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tokenizer():
    import opens1

    return opens1.load_tokenizer()


def debug_config(tokenizer, moe: bool = True):
    from opens1.config import get_preset
    from opens1.processing.processor import configure

    cfg = get_preset("debug")
    cfg.text.vocab_size = -(-len(tokenizer) // 64) * 64
    if not moe:
        cfg.text.num_experts = cfg.text.num_experts_per_tok = cfg.text.moe_intermediate_size = 0
    return configure(tokenizer, cfg)


@pytest.fixture(scope="session")
def text_docs(tokenizer):
    """~120 real pretraining documents (GSM8K + SMILES + proteins), tokenized."""
    from opens1.data.sources import build_documents, load_mixture

    samples = load_mixture("gsm8k:2,smiles:1,protein:0.5", None, samples_per_unit=40, seed=0)
    return build_documents(samples, "pretrain", tokenizer)


def make_model(tokenizer, seed: int = 0, moe: bool = True):
    from opens1.models.s1 import S1ForConditionalGeneration

    torch.manual_seed(seed)
    return S1ForConditionalGeneration(debug_config(tokenizer, moe))


def small_cfg(out_dir, **kw):
    from opens1.train.config import TrainConfig

    base = dict(stage="pretrain", model="debug", seq_len=128, micro_batch_size=2, max_steps=6, lr=3e-3,
                min_lr=3e-4, warmup_steps=2, out_dir=str(out_dir), ckpt_every=0, progress=False,
                tensorboard=False, spike_factor=0.0)
    base.update(kw)
    return TrainConfig(**base)


class _Helpers:
    debug_config = staticmethod(debug_config)
    make_model = staticmethod(make_model)
    small_cfg = staticmethod(small_cfg)


@pytest.fixture(scope="session")
def h():
    """Helper functions (debug_config, make_model, small_cfg) for tests in this folder."""
    return _Helpers
