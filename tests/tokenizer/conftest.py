"""Fixtures for the tokenizer tests: the bundled default tokenizer, loaded once."""

import pytest


@pytest.fixture(scope="session")
def tok():
    from opens1.tokenizer import load_tokenizer

    return load_tokenizer()
