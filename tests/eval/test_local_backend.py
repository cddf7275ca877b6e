"""The local backend on a tiny random OpenS1 model saved to disk (text and time-series prompts)."""

import dataclasses

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    opens1 = pytest.importorskip("opens1")
    try:
        from opens1.models.s1 import S1ForConditionalGeneration
        from opens1.processing.processor import configure
        tok = opens1.load_tokenizer()
    except (ImportError, FileNotFoundError) as e:  # another wing not built yet
        pytest.skip(f"model/tokenizer/processor not available: {e}")
    torch.manual_seed(0)
    cfg = opens1.get_preset("tiny-dense")
    cfg.text = dataclasses.replace(cfg.text, vocab_size=(len(tok) + 63) // 64 * 64)
    configure(tok, cfg)
    model = S1ForConditionalGeneration(cfg)
    path = tmp_path_factory.mktemp("tiny")
    opens1.save_model(model, path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_local_backend_generates_and_is_graded(tiny_dir):
    from opens1.envs import get_env
    from opens1.eval.backends import EVAL_SAMPLING, LocalBackend
    from opens1.eval.harness import generate_records, summarize

    torch.set_num_threads(1)
    backend = LocalBackend(str(tiny_dir), device="cpu")
    assert backend.template_hash.startswith("opens1:")
    sampling = EVAL_SAMPLING.replace(temperature=0.8, top_k=50, max_new_tokens=6, seed=1)
    case = get_env("logic/counting").case(0, "heldout")
    outs = backend.generate([case.messages()], 2, sampling)
    assert len(outs) == 1 and len(outs[0]) == 2 and all(isinstance(t, str) for t in outs[0])
    # Same seed -> same samples (reproducible evaluation).
    assert backend.generate([case.messages()], 2, sampling) == outs
    # A time-series prompt goes through the processor and the series tower.
    records = generate_records(backend, ["ecg/beat_label", "logic/counting"], n_items=1, n_samples=1,
                               sampling=sampling)
    assert len(records) == 2 and all(0.0 <= r["score"] <= 1.0 for r in records)
    assert set(summarize(records)["tasks"]) == {"ecg/beat_label", "logic/counting"}
