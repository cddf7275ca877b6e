"""Training losses: next-token cross-entropy with per-token weights, computed from the
model's final hidden states with the LM head fused in (no [B, T, V] logits tensor).

    linear_cross_entropy(hidden, head_weight, labels, weights) -> sum(w * ce)   (pretraining, SFT)
    token_log_probs(hidden, head_weight, targets, mask) -> (log p, entropy)    (RL: OREAL, KL-Cov)
    lm_loss(hidden, head_weight, labels, doc_ids, *, reduction) -> sum(w * ce) / sum(w)   (one batch alone)

The head runs only on the rows that carry a weight (a label): in SFT about a fifth of the
positions. The kernels (chunked head + softmax, gradients formed in the forward) are
`opens1.ops.linear_cross_entropy` / `linear_log_probs`, each checked against the unfused
F.linear + F.cross_entropy. Get hidden states with `model(..., return_hidden=True)` and the
head with `head_weight(model)`.

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

from opens1 import ops

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


def head_weight(model: torch.nn.Module) -> torch.Tensor:
    """The LM head's weight [V, H]. Under FSDP2 read it after the model's forward: the root
    unit (which holds the head) stays unsharded between its forward and backward."""
    w = getattr(model, "_orig_mod", model).lm_head.weight
    if type(w).__name__ == "DTensor":
        raise RuntimeError("the LM head's weight is still sharded: call head_weight(model) after the forward")
    return w


def linear_cross_entropy(hidden: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """sum(w * ce) over one micro-batch, a float32 scalar; divide by the step's total weight.

    hidden [B, T, H] (the model's final hidden states), head_weight [V, H], labels [B, T]
    (aligned with the inputs: the shift happens here), weights [B, T-1] from loss_weights.
    Only rows with a nonzero weight reach the head."""
    sel = weights != 0  # [B, T-1]
    h = hidden[:, :-1][sel]  # [n, H]: the rows that carry a label
    return ops.linear_cross_entropy(h, head_weight, labels[:, 1:][sel], weights[sel])


def token_log_probs(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(target) [B, T] (differentiable) and entropy [B, T] (no gradient),
    float32, 0 where mask is 0. hidden [B, T, H] predicts targets [B, T] at the same
    position (shift before calling); mask [B, T]: the rows to compute (e.g. response tokens)."""
    sel = mask != 0
    logp, ent = ops.linear_log_probs(hidden[sel], head_weight, targets[sel])
    zeros = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    return zeros.masked_scatter(sel, logp), zeros.masked_scatter(sel, ent)


def lm_loss(hidden: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor,
            doc_ids: torch.Tensor | None = None, *, reduction: str = "token") -> torch.Tensor:
    """The normalised loss of one batch on its own: sum(w * ce) / sum(w)."""
    w = loss_weights(labels, doc_ids, reduction)
    return linear_cross_entropy(hidden, head_weight, labels, w) / w.sum().clamp_min(1e-12)
