"""Training losses: next-token cross-entropy with per-token weights.

Labels follow the Hugging Face convention: `labels[b, t]` is the token that the logits
at position t-1 must predict (the shift happens here), and -100 marks "no loss"
(prompts, image and time-series placeholder tokens, padding, and the first token of
every packed document, so that no document predicts its neighbour's first token).

Reductions (the weight w of each loss token; the loss is sum(w * ce) / sum(w)):
    token    w = 1: every supervised token counts the same (long samples dominate)
    sample   w = 1/l: every sample counts the same (short samples dominate)
    square   w = l^-1/2: InternVL3's "square averaging" that Intern-S1 uses for
             multimodal pretraining, between the two biases
where l is the number of loss tokens in the token's own document (doc_ids).

The normaliser sum(w) is taken over the whole optimizer step (every micro-batch on every
rank), not per micro-batch: then gradient accumulation and data parallelism give exactly
the gradient of one big batch, which is what makes 2-rank training match 1-rank training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def target_mask(labels: torch.Tensor) -> torch.Tensor:
    """[B,T] labels -> [B,T-1] bool mask of supervised targets (after the shift)."""
    return labels[:, 1:] != IGNORE


def loss_weights(labels: torch.Tensor, doc_ids: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Per-target weights [B, T-1] (float32, 0 where there is no loss).

    labels, doc_ids: [B, T]. Without doc_ids each row is one sample."""
    mask = target_mask(labels)  # [B, T-1]
    w = mask.float()
    if reduction == "token":
        return w
    if reduction not in ("square", "sample"):
        raise ValueError(f"unknown loss reduction {reduction!r}")
    if doc_ids is None:
        doc_ids = torch.zeros_like(labels)
    docs = doc_ids[:, 1:]  # the document of each target
    # count loss tokens per (row, document): offset doc ids per row so rows never collide
    B = labels.shape[0]
    d = docs - docs.min() if docs.numel() else docs
    n_docs = int(d.max().item()) + 1 if d.numel() else 1
    key = d + torch.arange(B, device=d.device)[:, None] * n_docs  # [B, T-1]
    counts = torch.zeros(B * n_docs, device=labels.device).index_add_(0, key.flatten(), w.flatten())
    l = counts[key].clamp_min(1.0)  # [B, T-1] loss tokens in each target's document
    power = 0.5 if reduction == "square" else 1.0
    return w * l.pow(-power)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-target cross-entropy [B, T-1] in float32 (0 where labels == -100).

    logits: [B, T, V]; labels: [B, T]."""
    B, T, V = logits.shape
    lg = logits[:, :-1].reshape(-1, V).float()
    tg = labels[:, 1:].reshape(-1)
    ce = F.cross_entropy(lg, tg, ignore_index=IGNORE, reduction="none")
    return ce.view(B, T - 1)


def weighted_loss_sum(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * ce) over the micro-batch (a scalar); divide by the step's total weight."""
    return (token_cross_entropy(logits, labels) * weights).sum()


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, doc_ids: torch.Tensor | None = None,
                   reduction: str = "token") -> torch.Tensor:
    """The normalised loss of one batch on its own: sum(w * ce) / sum(w)."""
    w = loss_weights(labels, doc_ids, reduction)
    return weighted_loss_sum(logits, labels, w) / w.sum().clamp_min(1e-12)
