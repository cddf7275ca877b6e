import pytest


@pytest.fixture(scope="session")
def tokenizer_for_data():
    import opens1

    return opens1.load_tokenizer()
