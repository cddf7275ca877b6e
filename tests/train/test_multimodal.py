"""Image-text and time-series documents train through packing: several images and series
per packed row reach the towers in order, and the towers receive gradients."""

import itertools

import pytest
import torch

from opens1.data.packing import PackedStream
from opens1.data.sources import build_documents, read_ecg, read_gsm8k, read_molecule_images
from opens1.train.losses import head_weight, lm_loss
from opens1.train.parallelize import apply_activation_checkpointing
from opens1.train.trainer import Trainer


@pytest.fixture(scope="module")
def mm_docs(tokenizer):
    from opens1.config import get_preset
    from opens1.processing.processor import Processor, configure

    cfg = get_preset("debug")
    cfg.text.vocab_size = -(-len(tokenizer) // 64) * 64
    configure(tokenizer, cfg)
    proc = Processor(tokenizer, cfg)
    samples = (list(itertools.islice(read_molecule_images(None, size=56), 6))
               + list(itertools.islice(read_ecg(None, window_s=1.0), 4))
               + list(itertools.islice(read_gsm8k(None), 4)))
    return build_documents(samples, "multimodal", tokenizer, proc)


@pytest.mark.slow
def test_multimodal_rows_train_the_towers(tokenizer, mm_docs, h, tmp_path):
    cfg = h.small_cfg(tmp_path, stage="multimodal", loss_reduction="square", seq_len=512, micro_batch_size=2)
    model = h.make_model(tokenizer)
    stream = PackedStream(mm_docs, cfg.seq_len, cfg.micro_batch_size)
    probe = PackedStream(mm_docs, cfg.seq_len, cfg.micro_batch_size)
    epoch = [next(probe) for _ in range(probe.micro_batches_per_epoch())]
    # rows hold several documents, and images from several documents share a micro-batch
    assert any(b.n_docs > b.input_ids.shape[0] for b in epoch)
    assert any(b.pixel_values is not None and sum(s == "molecule_images" for s in b.sources) > 1 for b in epoch)
    t = Trainer(model, cfg, stream, tmp_path)
    seen_vision = seen_ts = False
    # forward/backward by hand on the trainer's own micro-batches, to see the gradients
    for _ in range(4):
        mb = next(t._iter)
        t.micro_batches += 1
        out = model(**mb.model_inputs(), attention_mask=mb.attention_mask, return_hidden=True)
        lm_loss(out.hidden_states, head_weight(model), mb.labels, mb.doc_ids, reduction="square").backward()
        if mb.pixel_values is not None:
            seen_vision |= any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision_tower.parameters())
        if mb.time_series:
            seen_ts |= any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.ts_tower.parameters())
        model.zero_grad(set_to_none=True)
    assert seen_vision and seen_ts
    res = t.fit(max_steps=3)
    assert res.steps == 3 and all(l == l for l in res.losses)


def test_activation_checkpointing_keeps_the_gradients(tokenizer, text_docs, h):
    batch = next(iter(PackedStream(text_docs, 128, 2)))
    grads = []
    for ac in (False, True):
        model = h.make_model(tokenizer)
        if ac:
            c = model.config  # every decoder, vision and time-series encoder layer
            n = c.text.num_hidden_layers + (c.vision.num_hidden_layers if c.vision else 0)
            assert apply_activation_checkpointing(model) == n + (c.timeseries.encoder_layers if c.timeseries else 0)
        out = model(**batch.model_inputs(), attention_mask=batch.attention_mask, return_hidden=True)
        lm_loss(out.hidden_states, head_weight(model), batch.labels).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.language_model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert set(dict(h.make_model(tokenizer).named_parameters())) == set(dict(model.named_parameters()))
