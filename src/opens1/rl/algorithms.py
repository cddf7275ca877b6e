"""Policy-optimisation losses for online RL with verifiable rewards.

Everything here is a pure function of tensors, so each loss is unit-tested against
hand-computed values. Shapes: B responses, T response tokens (padded), `mask` [B, T]
is 1.0 on real response tokens.

Algorithms
    grpo    clipped importance ratio with group-normalised advantages (DeepSeekMath/DAPO).
    oreal   Intern-S1's choice (OREAL, arXiv 2502.06781, without its token-level reward model):
            behaviour cloning (NLL) on correct rollouts + policy gradient on wrong ones, and no
            ratio clipping. GRPO's token clipping broke on Intern-S1's MoE because rollout and
            training kernels route tokens to different experts, so ratios are noisy.
Entropy control (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs")
    kl_cov   on the top `kl_cov_ratio` fraction of tokens by Cov(advantage, log-prob), add
             `kl_cov_coef * |logp - old_logp|`. These tokens drive entropy collapse: confident
             tokens whose probability keeps rising with the advantage.
    clip_cov on a random `clip_cov_ratio` fraction of tokens whose covariance lies in
             [clip_cov_lb, clip_cov_ub], stop the policy-gradient (detach).
Optional KL to a reference policy (k3 estimator) and token-level aggregation modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALGORITHMS = ("grpo", "oreal")
ENTROPY_CONTROLS = ("none", "kl_cov", "clip_cov")
LOSS_AGG = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


@dataclass
class RLLossConfig:
    algorithm: str = "oreal"
    entropy_control: str = "kl_cov"
    clip_eps_low: float = 0.2  # GRPO ratio clipping (1 - eps_low, 1 + eps_high)
    clip_eps_high: float = 0.28  # DAPO's clip-higher
    # KL-Cov: verl's default ratio is 2e-4 of tokens, tuned for batches of ~10^6 tokens. A CPU
    # batch has ~10^3 tokens, where 2e-4 selects nothing; at least one token is always chosen.
    # Intern-S1 raised the strength (k = 0.2, read here as a fraction) because its policy started
    # at low entropy; bench/rl_entropy.py measured 0.02 as too weak to matter on a tiny model.
    kl_cov_ratio: float = 0.2
    kl_cov_coef: float = 1.0
    clip_cov_ratio: float = 0.02
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    ref_kl_coef: float = 0.0  # KL to the reference policy (0: none, as in Intern-S1)
    sft_coef: float = 1.0  # OREAL lambda_sft: NLL weight on correct rollouts
    pg_coef: float = 1.0  # OREAL lambda_pg: policy-gradient weight on wrong rollouts
    loss_agg: str = "token-mean"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown RL algorithm {self.algorithm!r}; known: {ALGORITHMS}")
        if self.entropy_control not in ENTROPY_CONTROLS:
            raise ValueError(f"unknown entropy control {self.entropy_control!r}; known: {ENTROPY_CONTROLS}")
        if self.loss_agg not in LOSS_AGG:
            raise ValueError(f"unknown loss aggregation {self.loss_agg!r}; known: {LOSS_AGG}")


# ---------------------------------------------------------------- groups and advantages


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: bool = True) -> torch.Tensor:
    """GRPO advantages: rewards [G, n] (n rollouts per prompt) -> (r - mean_group) / (std_group + eps)."""
    mean = rewards.mean(dim=1, keepdim=True)
    adv = rewards - mean
    if scale:
        adv = adv / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
    return adv


def degenerate_groups(rewards: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """[G] bool: groups whose rollouts all got the same reward (all right or all wrong).
    They carry no learning signal under group-relative advantages and are dropped online."""
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) <= tol


# ---------------------------------------------------------------- token statistics
# (the per-token log-probs and entropies these take come from opens1.train.losses.token_log_probs)


def aggregate(loss_tok: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """Reduce a per-token loss [B, T] over the response mask.
    token-mean: every token weighs the same (DAPO); seq-mean-token-mean: every response weighs the
    same (GRPO's original); seq-mean-token-sum: long responses weigh more (Dr. GRPO style)."""
    mask = mask.to(loss_tok.dtype)
    if mode == "token-mean":
        return (loss_tok * mask).sum() / mask.sum().clamp_min(1.0)
    per_seq = (loss_tok * mask).sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(-1).clamp_min(1.0)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"unknown loss aggregation {mode!r}")
    return per_seq.mean()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def token_covariance(adv_tok: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token centred covariance term (A - mean A)(logp - mean logp) over valid tokens [B, T]."""
    a = adv_tok.detach()
    lp = logp.detach()
    cov = (a - _masked_mean(a, mask)) * (lp - _masked_mean(lp, mask))
    return cov.masked_fill(mask <= 0, float("-inf"))


def kl_cov_select(cov: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """[B, T] bool: the top `ratio` fraction of valid tokens by covariance (at least one)."""
    n_valid = int(mask.sum().item())
    k = max(1, int(n_valid * ratio)) if n_valid else 0
    sel = torch.zeros_like(mask, dtype=torch.bool)
    if k:
        idx = cov.flatten().topk(k).indices
        sel.view(-1)[idx] = True
    return sel & (mask > 0)


def clip_cov_select(cov: torch.Tensor, mask: torch.Tensor, *, ratio: float, lb: float, ub: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, T] bool: a random `ratio` fraction of valid tokens, drawn among those with lb <= cov <= ub."""
    cand = (cov >= lb) & (cov <= ub) & (mask > 0)
    n_pick = max(1, int(mask.sum().item() * ratio)) if cand.any() else 0
    sel = torch.zeros_like(cand)
    if n_pick:
        pool = cand.flatten().nonzero().squeeze(-1)
        order = torch.randperm(pool.numel(), generator=generator)[:n_pick]
        sel.view(-1)[pool[order]] = True
    return sel


# ---------------------------------------------------------------- losses


@dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float]


def _policy_gradient_terms(logp, old_logp, adv_tok, mask, cfg: RLLossConfig, *, clip: bool, generator=None):
    """Per-token policy-gradient loss with the configured entropy control.
    Returns (loss_tok [B, T], metrics)."""
    log_ratio = logp - old_logp.detach()
    ratio = log_ratio.exp()
    cov = token_covariance(adv_tok, logp, mask)
    metrics: dict[str, float] = {}
    if cfg.entropy_control == "clip_cov":
        sel = clip_cov_select(cov, mask, ratio=cfg.clip_cov_ratio, lb=cfg.clip_cov_lb, ub=cfg.clip_cov_ub,
                              generator=generator)
        # Detaching the selected tokens removes their gradient: they stop pushing entropy down.
        ratio = torch.where(sel, ratio.detach(), ratio)
        metrics["clip_cov_frac"] = float(sel.sum() / mask.sum().clamp_min(1))
    pg = -adv_tok * ratio
    if clip:
        clipped = -adv_tok * ratio.clamp(1 - cfg.clip_eps_low, 1 + cfg.clip_eps_high)
        metrics["clip_frac"] = float(_masked_mean((clipped > pg).float(), mask))
        pg = torch.maximum(pg, clipped)
    if cfg.entropy_control == "kl_cov":
        sel = kl_cov_select(cov, mask, cfg.kl_cov_ratio)
        pg = pg + sel * cfg.kl_cov_coef * log_ratio.abs()
        metrics["kl_cov_frac"] = float(sel.sum() / mask.sum().clamp_min(1))
    return pg, metrics


def ref_kl_term(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || pi_ref) per token: exp(r) - r - 1 with r = ref - logp (>= 0, unbiased)."""
    r = ref_logp.detach() - logp
    return r.exp() - r - 1


def grpo_loss(logp, old_logp, advantages, mask, cfg: RLLossConfig, *, ref_logp=None, generator=None) -> LossOutput:
    """GRPO: advantages [B] (group-normalised) broadcast over tokens; clipped ratio."""
    adv_tok = advantages.unsqueeze(-1).expand_as(logp).to(logp.dtype)
    pg, metrics = _policy_gradient_terms(logp, old_logp, adv_tok, mask, cfg, clip=True, generator=generator)
    if ref_logp is not None and cfg.ref_kl_coef > 0:
        pg = pg + cfg.ref_kl_coef * ref_kl_term(logp, ref_logp)
    loss = aggregate(pg, mask, cfg.loss_agg)
    return LossOutput(loss, {"pg_loss": float(loss.detach()), **metrics})


def oreal_loss(logp, old_logp, advantages, correct, mask, cfg: RLLossConfig, *, ref_logp=None,
               generator=None) -> LossOutput:
    """OREAL-style: NLL (behaviour cloning) on correct rollouts, unclipped policy gradient with
    the (negative) group advantage on wrong ones. correct [B] bool; advantages [B].

    Entropy control sees ALL response tokens, as Intern-S1's separate L_KL-Cov term does: the
    tokens with the largest Cov(A, logp) are confident tokens of correct rollouts (A > 0, high
    logp), and behaviour cloning on exactly those is what collapses entropy. Restricting the
    control to the policy-gradient (wrong) rollouts would leave that driver untouched."""
    pos = correct.to(logp.dtype).unsqueeze(-1) * mask  # [B, T]
    neg = (1 - correct.to(logp.dtype)).unsqueeze(-1) * mask
    adv_tok = advantages.unsqueeze(-1).expand_as(logp).to(logp.dtype)
    cov = token_covariance(adv_tok, logp, mask)
    metrics: dict[str, float] = {}
    lp = logp
    if cfg.entropy_control == "clip_cov":
        sel = clip_cov_select(cov, mask, ratio=cfg.clip_cov_ratio, lb=cfg.clip_cov_lb, ub=cfg.clip_cov_ub,
                              generator=generator)
        lp = torch.where(sel, logp.detach(), logp)  # selected tokens get no gradient, BC or PG
        metrics["clip_cov_frac"] = float(sel.sum() / mask.sum().clamp_min(1))
    bc = aggregate(-lp, pos, cfg.loss_agg) if pos.sum() > 0 else logp.sum() * 0
    ratio = (lp - old_logp.detach()).exp()
    pg = aggregate(-adv_tok * ratio, neg, cfg.loss_agg) if neg.sum() > 0 else logp.sum() * 0
    loss = cfg.sft_coef * bc + cfg.pg_coef * pg
    if cfg.entropy_control == "kl_cov":
        sel = kl_cov_select(cov, mask, cfg.kl_cov_ratio)
        kl = sel * cfg.kl_cov_coef * (logp - old_logp.detach()).abs()
        loss = loss + aggregate(kl, mask, cfg.loss_agg)
        metrics["kl_cov_frac"] = float(sel.sum() / mask.sum().clamp_min(1))
        metrics["kl_cov_pos_frac"] = float((sel * pos).sum() / sel.sum().clamp_min(1))
    if ref_logp is not None and cfg.ref_kl_coef > 0:
        loss = loss + cfg.ref_kl_coef * aggregate(ref_kl_term(logp, ref_logp), mask, cfg.loss_agg)
    return LossOutput(loss, {"bc_loss": float(bc.detach()), "pg_loss": float(pg.detach()), **metrics})


def policy_loss(logp, old_logp, advantages, correct, mask, cfg: RLLossConfig, *, ref_logp=None,
                generator=None) -> LossOutput:
    """Dispatch on cfg.algorithm."""
    if cfg.algorithm == "grpo":
        return grpo_loss(logp, old_logp, advantages, mask, cfg, ref_logp=ref_logp, generator=generator)
    return oreal_loss(logp, old_logp, advantages, correct, mask, cfg, ref_logp=ref_logp, generator=generator)
