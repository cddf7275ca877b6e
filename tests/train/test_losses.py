"""Loss weighting by hand, and the loss masks: no loss on prompts, images, series or padding."""

import math

import pytest
import torch

from opens1.data.packing import Document, collate
from opens1.train.losses import IGNORE, loss_weights, masked_lm_loss, token_cross_entropy


def test_uniform_logits_give_log_vocab():
    logits = torch.zeros(1, 5, 7)
    labels = torch.tensor([[1, 2, IGNORE, 4, 5]])
    assert masked_lm_loss(logits, labels).item() == pytest.approx(math.log(7))
    ce = token_cross_entropy(logits, labels)
    assert ce.shape == (1, 4) and ce[0, 1] == 0  # the ignored target contributes nothing


def test_square_and_sample_weights_by_hand():
    # one row, two documents: doc 0 has 4 loss targets, doc 1 has 1
    labels = torch.tensor([[9, 1, 1, 1, 1, IGNORE, 2]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 0, 1, 1]])
    w_sq = loss_weights(labels, doc_ids, "square")
    assert w_sq.tolist() == [[0.5, 0.5, 0.5, 0.5, 0.0, 1.0]]  # 4^-1/2 and 1^-1/2
    w_s = loss_weights(labels, doc_ids, "sample")
    assert w_s.tolist() == [[0.25, 0.25, 0.25, 0.25, 0.0, 1.0]]
    assert loss_weights(labels, doc_ids, "token").tolist() == [[1, 1, 1, 1, 0, 1]]
    # the square-averaged loss is sum(w*ce)/sum(w): with per-document CEs a and b
    # it is (4 * 0.5 * a + 1 * b) / (4 * 0.5 + 1)
    V = 3
    logits = torch.zeros(1, 7, V)
    logits[0, :4, 1] = 2.0  # doc 0 predicts token 1 confidently; doc 1 is uniform
    a = -torch.log_softmax(torch.tensor([0.0, 2.0, 0.0]), 0)[1].item()
    b = math.log(V)
    got = masked_lm_loss(logits, labels, doc_ids, "square").item()
    assert got == pytest.approx((2 * a + b) / 3, rel=1e-6)


def test_weights_separate_rows():
    labels = torch.tensor([[5, 1, 1], [5, 1, IGNORE]])
    doc_ids = torch.zeros(2, 3, dtype=torch.long)  # same doc id in both rows: still separate samples
    assert loss_weights(labels, doc_ids, "sample").tolist() == [[0.5, 0.5], [1.0, 0.0]]


def test_packing_masks_first_tokens_and_padding():
    d1 = Document(torch.tensor([3, 4, 5]), torch.tensor([3, 4, 5]))
    d2 = Document(torch.tensor([6, 7]), torch.tensor([6, 7]))
    b = collate([[d1, d2], [d2]], pad_id=0, pad_multiple=1)
    # row 0: the first token of every document is never a target (no cross-document loss)
    assert b.labels[0].tolist() == [IGNORE, 4, 5, IGNORE, 7]
    assert b.doc_ids[0].tolist() == [0, 0, 0, 1, 1]
    # row 1: padding has label -100 and its own document id
    assert b.labels[1].tolist() == [IGNORE, 7, IGNORE, IGNORE, IGNORE]
    assert b.doc_ids[1].tolist() == [0, 0, 1, 1, 1]
    assert b.attention_mask[1].tolist() == [True, True, False, False, False]
    assert b.n_tokens == 7 and b.n_loss_tokens == 4


def test_sft_loss_only_on_assistant_tokens(tokenizer, h):
    from opens1.data.sources import Sample, to_document
    from opens1.processing.processor import Processor

    proc = Processor(tokenizer, h.debug_config(tokenizer))
    s = Sample("t", messages=[{"role": "user", "content": "What is 6 x 7?"},
                              {"role": "assistant", "content": "42"}])
    doc = to_document(s, "sft", tokenizer, proc)
    supervised = tokenizer.decode(doc.input_ids[doc.labels != IGNORE].tolist())
    assert "42" in supervised and "6 x 7" not in supervised
    # changing the prompt's logits cannot change the loss: the gradient there is zero
    V = len(tokenizer) + 64
    logits = torch.randn(1, len(doc), V, requires_grad=True)
    masked_lm_loss(logits, doc.labels[None]).backward()
    prompt_rows = (doc.labels[1:] == IGNORE).nonzero().flatten()  # logits at t predict labels[t+1]
    assert torch.all(logits.grad[0, prompt_rows] == 0)


def test_multimodal_no_loss_on_image_or_series_placeholders(tokenizer, h):

    from opens1.data.sources import read_ecg, read_molecule_images, to_document
    from opens1.processing.processor import Processor

    cfg = h.debug_config(tokenizer)
    proc = Processor(tokenizer, cfg)
    img = next(iter(read_molecule_images(None, size=64)))
    ecg = next(iter(read_ecg(None, window_s=1.0)))
    for sample, tok in ((img, cfg.image_token_id), (ecg, cfg.ts_token_id)):
        doc = to_document(sample, "multimodal", tokenizer, proc)
        placeholders = doc.input_ids == tok
        assert placeholders.sum() > 0
        assert torch.all(doc.labels[placeholders] == IGNORE)
        assert (doc.labels[~placeholders] != IGNORE).sum() > 10  # the text around them is supervised
