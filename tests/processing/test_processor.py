"""Processor: chat messages with images and series -> input_ids, pixel_values, series, labels."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from opens1.config import get_preset
from opens1.processing.processor import Processor, configure
from opens1.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture()
def cfg(tok):
    c = get_preset("tiny")
    c.text.vocab_size = (len(tok) + 63) // 64 * 64
    return c


def _png(w=200, h=100) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_text_only(tok, cfg):
    out = Processor(tok, cfg)([{"role": "user", "content": "Is CC(=O)Oc1ccccc1C(=O)O aspirin?"}])
    ids = out["input_ids"]
    assert ids.shape[0] == 1 and ids.dtype == torch.long
    assert out["attention_mask"].shape == ids.shape and out["attention_mask"].all()
    assert out["pixel_values"] is None and out["time_series"] is None and out["sampling_rates"] is None
    assert tok.decode(ids[0].tolist()).endswith("<|im_start|>assistant\n<think>")


def test_unset_ids_are_configured_and_mismatch_is_an_error(tok, cfg):
    assert cfg.image_token_id == 0
    Processor(tok, cfg)
    assert cfg.image_token_id == tok.token_to_id("<IMG_CONTEXT>")
    assert cfg.ts_token_id == tok.token_to_id("<TS_CONTEXT>")
    bad = cfg.replace(image_token_id=cfg.image_token_id + 1)
    with pytest.raises(ValueError, match="image_token_id"):
        Processor(tok, bad)
    small = get_preset("tiny")
    small.text.vocab_size = 64
    with pytest.raises(ValueError, match="vocab_size"):
        configure(tok, small)


def test_images_and_series_expand_to_context_tokens(tok, cfg):
    img = Image.new("RGB", (300, 150), (255, 0, 0))
    sig = np.sin(np.arange(3600) / 10.0)
    msgs = [
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image", "image": img},
            {"type": "image_url", "image_url": {"url": _png()}},
            {"type": "time_series", "time_series": {"values": sig.tolist(), "sampling_rate": 360.0}},
        ]},
    ]
    p = Processor(tok, cfg)
    out = p(msgs)
    ids = out["input_ids"][0]
    n_tiles = out["pixel_values"].shape[0]
    assert out["pixel_values"].shape[1:] == (3, cfg.vision.image_size, cfg.vision.image_size)
    assert int((ids == cfg.image_token_id).sum()) == n_tiles * cfg.image_tokens_per_tile
    assert int((ids == tok.token_to_id("<img>")).sum()) == 2 == int((ids == tok.token_to_id("</img>")).sum())
    from opens1.processing.series import series_num_tokens

    (x,), (sr,) = out["time_series"], out["sampling_rates"]
    assert x.shape == (3600, 1) and sr == 360.0
    assert int((ids == cfg.ts_token_id).sum()) == series_num_tokens(3600, 360.0, cfg.timeseries)
    # context runs are contiguous and bracketed
    text = tok.decode(ids.tolist())
    assert "Compare\n<img><IMG_CONTEXT>" in text and "</img>\n<TS><TS_CONTEXT>" in text


def test_for_training_labels(tok, cfg):
    msgs = [
        {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64))}, {"type": "text", "text": "Color?"}]},
        {"role": "assistant", "content": "Black.", "reasoning_content": "All pixels are 0."},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes."},
    ]
    out = Processor(tok, cfg).for_training(msgs)
    labels, ids = out["labels"][0], out["input_ids"][0]
    assert labels.shape == ids.shape
    kept = labels != -100
    assert torch.equal(labels[kept], ids[kept])
    # Intern-S1's template drops the reasoning of replies before the last user turn
    assert tok.decode(ids[kept].tolist()) == "Black.<|im_end|><think>\n\n</think>\nYes.<|im_end|>"
    assert not kept[ids == cfg.image_token_id].any()
    assert tok.decode(ids.tolist()).endswith("Yes.<|im_end|>\n")  # no generation prompt


def test_errors(tok, cfg):
    text_only = cfg.replace(vision=None, timeseries=None)
    p = Processor(tok, text_only)
    with pytest.raises(ValueError, match="vision"):
        p([{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (8, 8))}]}])
    with pytest.raises(ValueError, match="time"):
        p([{"role": "user", "content": [{"type": "time_series", "time_series": {"values": [1.0] * 100}}]}])
    with pytest.raises(ValueError, match="time_series"):
        Processor(tok, cfg)([{"role": "user", "content": [{"type": "time_series", "time_series": [1, 2]}]}])


def test_outputs_feed_the_model(tok):
    """The processor's batch runs through a debug S1 model: features land on the context ids."""
    from opens1.models.s1 import S1ForConditionalGeneration

    cfg = get_preset("debug")
    cfg.text.vocab_size = (len(tok) + 63) // 64 * 64
    configure(tok, cfg)
    torch.manual_seed(0)
    model = S1ForConditionalGeneration(cfg)
    msgs = [
        {"role": "user", "content": [
            {"type": "image", "image": Image.new("RGB", (120, 60), (5, 5, 5))},
            {"type": "time_series", "time_series": {"values": np.sin(np.arange(2000) / 7.0).tolist(), "sampling_rate": 100.0}},
            {"type": "text", "text": "Describe CC(=O)Oc1ccccc1C(=O)O"},
        ]},
        {"role": "assistant", "content": "A signal and aspirin."},
    ]
    b = Processor(tok, cfg).for_training(msgs)
    out = model(b["input_ids"], attention_mask=b["attention_mask"], pixel_values=b["pixel_values"],
                time_series=b["time_series"], sampling_rates=b["sampling_rates"])
    assert out.logits.shape == (1, b["input_ids"].shape[1], cfg.text.vocab_size)
    loss = torch.nn.functional.cross_entropy(out.logits[0, :-1], b["labels"][0, 1:], ignore_index=-100)
    assert torch.isfinite(loss)
