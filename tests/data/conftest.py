import pytest


@pytest.fixture(scope="session")
def tokenizer_for_data():
    import opens1

    return opens1.load_tokenizer()


@pytest.fixture(scope="session")
def real_docs(tokenizer_for_data):
    """~700 real pretraining documents of very different lengths (GSM8K, SMILES, QM9,
    proteins, DNA), tokenized with the real tokenizer."""
    from opens1.data.sources import build_documents, load_mixture

    samples = load_mixture("gsm8k,smiles,qm9,protein,dna", None, samples_per_unit=150, seed=0)
    return build_documents(samples, "pretrain", tokenizer_for_data)
