"""Shared fixtures for the RL tests: a debug-sized S1 with the bundled tokenizer."""

import pytest
import torch

import opens1
from opens1.config import get_preset
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.processing.processor import Processor, configure


def tiny_parts():
    """(tokenizer, processor, model): the debug preset sized to the bundled tokenizer."""
    torch.manual_seed(0)
    tok = opens1.load_tokenizer()
    cfg = get_preset("debug")
    cfg.text.vocab_size = (len(tok) + 63) // 64 * 64
    configure(tok, cfg)
    return tok, Processor(tok, cfg), S1ForConditionalGeneration(cfg)


@pytest.fixture(scope="module")
def parts():
    return tiny_parts()
