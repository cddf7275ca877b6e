"""The one loss (train/losses.py): the fused head + cross-entropy from hidden states against
the unfused F.linear + F.cross_entropy on full logits (float32, bf16 autocast), the head on
labelled rows only, the RL log-probs; loss weighting by hand; and the loss masks: no loss on
prompts, images, series or padding."""

import math

import pytest
import torch
import torch.nn.functional as F

from opens1 import ops
from opens1.data.packing import Document, collate
from opens1.train import losses
from opens1.train.losses import IGNORE, linear_cross_entropy, lm_loss, loss_weights, token_log_probs


def unfused(hidden, w, labels, weights):
    """sum(w * ce) from full [B, T, V] logits: what the Trainer computed before the fused loss."""
    logits = (hidden @ w.t())[:, :-1].float()
    ce = F.cross_entropy(logits.reshape(-1, w.shape[0]), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                         reduction="none").view_as(weights)
    return (ce * weights).sum()


def test_uniform_logits_give_log_vocab():
    hidden = torch.randn(1, 5, 4)
    labels = torch.tensor([[1, 2, IGNORE, 4, 5]])
    assert lm_loss(hidden, torch.zeros(7, 4), labels).item() == pytest.approx(math.log(7))  # all-zero head


@pytest.mark.parametrize("reduction", ["token", "square", "sample"])
def test_fused_loss_matches_unfused_in_value_and_gradient(reduction):
    torch.manual_seed(0)
    B, T, H, V = 3, 200, 16, 37  # 597 target rows: several chunks of the fused kernel
    hidden = torch.randn(B, T, H, requires_grad=True)
    w = (0.3 * torch.randn(V, H)).requires_grad_()
    labels = torch.randint(0, V, (B, T))
    labels[torch.rand(B, T) < 0.8] = IGNORE  # SFT-like: about a fifth of the positions labelled
    doc_ids = (torch.arange(T) // 70).expand(B, T)
    labels[:, ::70] = IGNORE  # packing: a document's first token is never a target
    weights = loss_weights(labels, doc_ids, reduction)
    got = linear_cross_entropy(hidden, w, labels, weights)
    ref = unfused(hidden, w, labels, weights)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got, (hidden, w)), torch.autograd.grad(ref, (hidden, w))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_loss_under_bf16_autocast():
    torch.manual_seed(1)
    hidden = torch.randn(2, 300, 32, requires_grad=True)
    w = (0.1 * torch.randn(97, 32)).requires_grad_()
    labels = torch.randint(0, 97, (2, 300))
    weights = loss_weights(labels, None, "token")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(hidden, w, labels, weights)
        ref = unfused(hidden, w, labels, weights)  # autocast: the head matmul in bf16
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-2)
    for a, b in zip(torch.autograd.grad(got, (hidden, w)), torch.autograd.grad(ref, (hidden, w))):
        # the unfused bf16 path rounds grad_w to bf16 after summing 600 rows; ours sums in float32
        assert a.dtype == torch.float32
        assert (a - b).norm() / b.norm() < 1e-2


def test_head_runs_only_on_labelled_rows(monkeypatch):
    seen = {}
    real = ops.linear_cross_entropy

    def spy(h, w, t, weight):
        seen["rows"] = h.shape[0]
        return real(h, w, t, weight)

    monkeypatch.setattr(losses.ops, "linear_cross_entropy", spy)
    labels = torch.full((2, 10), IGNORE)
    labels[0, 3:6] = 1
    labels[1, 9] = 2
    linear_cross_entropy(torch.randn(2, 10, 4), torch.randn(5, 4), labels, loss_weights(labels, None, "token"))
    assert seen["rows"] == 4  # 3 + 1 labelled targets of 2 x 9


def test_token_log_probs_match_log_softmax_on_masked_rows():
    torch.manual_seed(2)
    hidden = torch.randn(2, 6, 8, requires_grad=True)
    w = torch.randn(11, 8)
    targets = torch.randint(0, 11, (2, 6))
    mask = torch.zeros(2, 6)
    mask[0, 2:] = 1.0
    mask[1, 4:] = 1.0  # response tokens
    logp, ent = token_log_probs(hidden, w, targets, mask)
    lp_all = torch.log_softmax(hidden @ w.t(), -1)
    ref = lp_all.gather(-1, targets[..., None]).squeeze(-1) * mask
    torch.testing.assert_close(logp, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, -(lp_all.exp() * lp_all).sum(-1).detach() * mask, atol=1e-5, rtol=1e-5)
    g, = torch.autograd.grad((logp * 2.0).sum(), hidden)
    r, = torch.autograd.grad((ref * 2.0).sum(), hidden)
    torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
    assert torch.all(g[mask == 0] == 0)  # prompt rows never reach the head


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
    hidden = torch.zeros(1, 7, 1)
    hidden[0, :4] = 1.0  # with head [0, 2, 0]: doc 0 predicts token 1 confidently; doc 1 is uniform
    head = torch.tensor([[0.0], [2.0], [0.0]])
    a = -torch.log_softmax(torch.tensor([0.0, 2.0, 0.0]), 0)[1].item()
    b = math.log(V)
    got = lm_loss(hidden, head, labels, doc_ids, reduction="square").item()
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
    # changing the prompt's hidden states cannot change the loss: the gradient there is zero
    V = len(tokenizer) + 64
    hidden = torch.randn(1, len(doc), 16, requires_grad=True)
    lm_loss(hidden, torch.randn(V, 16), doc.labels[None]).backward()
    prompt_rows = (doc.labels[1:] == IGNORE).nonzero().flatten()  # position t predicts labels[t+1]
    assert torch.all(hidden.grad[0, prompt_rows] == 0)
    assert hidden.grad[0, (doc.labels[1:] != IGNORE).nonzero().flatten()].abs().sum() > 0


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
