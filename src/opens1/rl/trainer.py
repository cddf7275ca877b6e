"""Online RL with verifiable rewards: rollouts -> rewards -> group filtering -> policy update.

One step, as in Intern-S1's RL stage (docs/rl.md):
    1. draw `prompts_per_step` training cases from the environments (never the held-out split);
    2. the rollout engine samples `rollouts_per_prompt` (8) responses per prompt;
    3. each response is scored by its environment's verifier (the mixture of rewards);
    4. groups whose rollouts all scored the same (all right or all wrong) are dropped;
    5. one policy update with OREAL (or GRPO) + KL-Cov on the kept groups;
    6. the new weights are pushed to the rollout engine (colocated: same machine).
Vision tower and MoE router are frozen by default (Intern-S1 froze both for RL).

Library use (the speedrun does this):

    from opens1.rl.trainer import RLConfig, RLTrainer
    trainer = RLTrainer(model, tokenizer, processor, RLConfig(envs=["gc_content"]))
    before = trainer.heldout_reward()        # HeldoutReward(reward, items, by_env)
    result = trainer.train(max_seconds=300)
    after = trainer.heldout_reward(items=before.items)
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from opens1.envs import get_env
from opens1.infer.sampling import SamplingParams
from opens1.models import S1ForConditionalGeneration, save_model
from opens1.rl.algorithms import RLLossConfig, degenerate_groups, group_advantages, policy_loss
from opens1.rl.mixture import MixtureOfRewards
from opens1.rl.rollout import LocalEngine, Rollout, RolloutEngine, response_text
from opens1.train.losses import head_weight, token_log_probs
from opens1.train.optim import adamw
from opens1.train.parallelize import apply_fsdp


@dataclass
class RLConfig:
    envs: list[str] = field(default_factory=lambda: ["gc_content"])
    data_root: str | None = None  # None: the embedded real data
    steps: int = 1000
    prompts_per_step: int = 8
    rollouts_per_prompt: int = 8
    max_new_tokens: int = 40  # the chem tasks' worked answers run to 36 tokens: a cut answer scores 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    grad_norm_skip: float | None = None  # Intern-S1 skipped updates with grad norm > 0.3
    ppo_epochs: int = 1
    # optimizer steps per batch of rollouts (per epoch); Intern-S1 used 8. Needed for KL-Cov:
    # its |logp - old_logp| term has zero gradient on the first, on-policy step.
    mini_batches: int = 4
    micro_batch_rows: int = 64
    loss: RLLossConfig = field(default_factory=RLLossConfig)
    correct_threshold: float = 1.0  # reward >= this counts as a correct rollout (OREAL's positives)
    # Training reward only (held-out rewards stay exact): a wrong number earns
    # partial_credit * max(0, 1 - |answer - reference| / max(1, |reference|)), so a group of
    # near misses still ranks its rollouts instead of being dropped as all-wrong. 0: off.
    partial_credit: float = 0.0
    # DAPO's dynamic sampling: draw prompts in up to `sample_rounds` rounds of
    # `prompts_per_step` until the step has `prompts_per_step` groups with mixed rewards
    # (all-right or all-wrong groups carry no signal). 1: one round, as GRPO.
    sample_rounds: int = 1
    # Mixture of rewards (opens1.rl.mixture): data source -> verifier, weight. The default
    # routes every environment to its own verifier.
    rewards: dict = field(default_factory=lambda: {"sources": {"*": {"verifier": "env"}}})
    freeze_vision: bool = True
    freeze_router: bool = True
    # the time-series encoder, like the vision one: frozen, and run in eval mode (its patch
    # transformer has dropout, which would make old and new log-probs of a rollout disagree)
    freeze_timeseries: bool = True
    enable_thinking: bool = False  # tiny models answer directly
    heldout_items: int = 64
    seed: int = 0


@dataclass(frozen=True)
class HeldoutReward:
    """A held-out read-out: the mean reward, how many items it covers, and per environment
    {"reward": mean, "items": n} (plus "answer" for the answer prior)."""
    reward: float
    items: int
    by_env: dict[str, dict]


@dataclass
class RLResult:
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    history: list[dict] = field(default_factory=list)  # one metrics dict per step

    def curve(self, key: str) -> list[float]:
        return [h[key] for h in self.history if key in h and h[key] is not None]


VISION_MODULES = ("vision_tower", "multi_modal_projector")
TIMESERIES_MODULES = ("ts_tower", "ts_projector")


def frozen_towers(*, vision: bool = True, timeseries: bool = True) -> tuple[str, ...]:
    """Names of the encoder modules (top-level attributes of the model) that RL freezes."""
    return (VISION_MODULES if vision else ()) + (TIMESERIES_MODULES if timeseries else ())


def freeze_for_rl(model: torch.nn.Module, *, vision: bool = True, router: bool = True, timeseries: bool = True) -> int:
    """Freeze the vision tower (+projector), the time-series tower (+projector) and MoE
    routers; returns how many tensors were frozen."""
    towers = frozen_towers(vision=vision, timeseries=timeseries)
    n = 0
    for name, p in model.named_parameters():
        frozen = name.split(".", 1)[0] in towers
        frozen |= router and (".mlp.gate." in name or name.endswith(".mlp.gate.weight") or ".router." in name)
        if frozen:
            p.requires_grad_(False)
            n += 1
    return n


class RLTrainer:
    def __init__(self, model, tokenizer, processor, cfg: RLConfig, *, engine: RolloutEngine | None = None,
                 log_path: str | Path | None = None):
        self.model, self.tok, self.proc, self.cfg = model, tokenizer, processor, cfg
        self.mixture = MixtureOfRewards.from_dict(cfg.rewards)
        for name in cfg.envs:
            self.mixture.rule(name)  # an environment without a reward rule is an error now, not mid-run
        self.envs = {name: get_env(name, data_root=cfg.data_root) for name in cfg.envs}
        freeze_for_rl(model, vision=cfg.freeze_vision, router=cfg.freeze_router, timeseries=cfg.freeze_timeseries)
        # frozen towers stay in eval mode while the policy trains (no dropout in their features)
        self.frozen_towers = [m for name in frozen_towers(vision=cfg.freeze_vision, timeseries=cfg.freeze_timeseries)
                              if (m := getattr(model, name, None)) is not None]
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        # The rollout copy is taken before sharding: under torchrun every rank keeps a full
        # colocated copy for generation, while the trainer's copy is sharded with FSDP2.
        self.engine = engine or LocalEngine(model, pad_token_id=_pad_id(tokenizer))
        if self.world > 1:
            apply_fsdp(model)
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
        self.rng = random.Random(cfg.seed + self.rank)  # each rank draws its own prompts
        # rollouts sample with RLConfig's knobs (default temperature 1.0, no top-k / top-p)
        self.sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                       top_k=cfg.top_k, top_p=cfg.top_p, stop_token_ids=_eos(tokenizer),
                                       vocab_limit=len(tokenizer))
        self.log_path = Path(log_path) if log_path else None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.result = RLResult()

    # ------------------------------------------------------------ prompts and rewards

    def _prompt_inputs(self, case) -> dict:
        messages = case.messages()
        return self.proc(messages, enable_thinking=self.cfg.enable_thinking, add_generation_prompt=True)

    def _draw_cases(self, k: int):
        names = list(self.envs)
        out = []
        for _ in range(k):
            name = self.rng.choice(names)
            env = self.envs[name]
            idx = self.rng.randrange(env.num_cases("train"))
            out.append((name, env.case(idx, split="train")))
        return out

    def _score(self, name: str, case, rollout: Rollout, *, train: bool = False) -> float:
        text = response_text(self.tok, rollout)
        exact = float(self.mixture.score(name, text, case))
        if not train or self.cfg.partial_credit <= 0 or exact >= self.cfg.correct_threshold:
            return exact
        return max(exact, self.cfg.partial_credit * numeric_closeness(self.mixture.verify(name, text, case), case))

    # ------------------------------------------------------------ log-probs of rollouts

    def _batch(self, rollouts: list[Rollout]):
        """Right-padded full sequences, targets and a response mask over target positions."""
        seqs = [r.prompt_ids + r.response_ids for r in rollouts]
        width = max(map(len, seqs))
        pad = _pad_id(self.tok)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        resp = torch.zeros((len(seqs), width - 1))
        for i, (r, s) in enumerate(zip(rollouts, seqs)):
            ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            # target position t predicts token t+1: response tokens start at len(prompt)
            resp[i, len(r.prompt_ids) - 1: len(s) - 1] = 1.0
        extra = _concat_multimodal([r.extra for r in rollouts])
        return ids, attn, resp, extra

    def _logprobs(self, rollouts):
        """(log p [b, W-1], entropy [b, W-1], response mask [b, W-1]); the head runs on the
        response tokens only, fused with the log-softmax (train/losses.py)."""
        ids, attn, resp, extra = self._batch(rollouts)
        out = self.model(input_ids=ids, attention_mask=attn, return_hidden=True, **extra)
        logp, ent = token_log_probs(out.hidden_states[:, :-1], head_weight(self.model), ids[:, 1:], resp)
        return logp, ent, resp

    # ------------------------------------------------------------ one step

    def step(self) -> dict:
        t0 = time.perf_counter()
        cases, groups, rewards, keep, drawn = self._sample_groups()
        metrics = self._reward_metrics(cases, groups, rewards)
        metrics["kept_groups"] = int(keep.sum())
        metrics["drawn_prompts"] = drawn
        if self._global_sum(int(keep.sum())) > 0:  # the same decision on every rank
            metrics.update(self._update(groups, rewards, keep))
            self.engine.update_weights(self.full_state_dict())
        metrics["seconds"] = time.perf_counter() - t0
        self.result.steps += 1
        self.result.history.append(metrics)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"step": self.result.steps, **metrics}) + "\n")
        return metrics

    def _sample_groups(self):
        """Rollout groups for one step: (cases, groups, rewards [G, n], keep [G] bool, prompts
        drawn). With `sample_rounds` > 1, rounds of prompts are drawn until `prompts_per_step`
        groups have mixed rewards (DAPO); the step then trains on those groups only."""
        cfg = self.cfg
        cases, groups, rows, drawn = [], [], [], 0
        for _ in range(max(1, cfg.sample_rounds)):
            new = self._draw_cases(cfg.prompts_per_step)
            drawn += len(new)
            gens = self.engine.generate([self._prompt_inputs(c) for _, c in new], cfg.rollouts_per_prompt,
                                        self.sampling, seed=self.rng.randrange(2**31))
            cases += new
            groups += gens
            rows += [[self._score(n, c, r, train=True) for r in g] for (n, c), g in zip(new, gens)]
            keep = ~degenerate_groups(torch.tensor(rows))
            if int(keep.sum()) >= cfg.prompts_per_step:
                break
        rewards = torch.tensor(rows)  # [G, n]
        if cfg.sample_rounds > 1:  # the first prompts_per_step mixed groups, in draw order
            keep &= keep.cumsum(0) <= cfg.prompts_per_step
        return cases, groups, rewards, keep, drawn

    def _reward_metrics(self, cases, groups, rewards) -> dict:
        m = {"reward_mean": float(rewards.mean()), "response_len": float(
            sum(len(r.response_ids) for g in groups for r in g) / max(1, sum(len(g) for g in groups)))}
        for name in self.envs:
            rows = [i for i, (n, _) in enumerate(cases) if n == name]
            if rows:
                m[f"reward/{name}"] = float(rewards[rows].mean())
        return m

    def _global_sum(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([float(x)])
        dist.all_reduce(t)
        return float(t)

    def _global_max(self, x: float) -> float:
        t = torch.tensor([float(x)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Unsharded weights (every rank gets them under FSDP) for the rollout engine and export."""
        if self.world == 1:
            return self.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))

    def export(self, path) -> None:
        """Write the policy with save_model (rank 0 under FSDP)."""
        sd = self.full_state_dict()
        if self.rank != 0:
            return
        if self.world == 1:
            save_model(self.model, path)
            return
        plain = S1ForConditionalGeneration(self.model.config)
        plain.load_state_dict(sd)
        save_model(plain, path)

    def _update(self, groups, rewards, keep) -> dict:
        """`ppo_epochs` passes over the kept rollouts, each split into `mini_batches` optimizer
        steps (Intern-S1: 8 mini-batches per training batch). The old log-probs are those of the
        policy that sampled the rollouts, computed once before the first step; from the second
        step on the policy has moved, so importance ratios and KL-Cov's |logp - old_logp| are
        non-zero. With a single step per batch KL-Cov has no effect: |x| has zero gradient at 0."""
        cfg = self.cfg
        self._train_mode()
        adv = group_advantages(rewards)[keep].flatten()
        kept = [r for g, k in zip(groups, keep.tolist()) if k for r in g]
        correct = (rewards[keep].flatten() >= cfg.correct_threshold)
        kept, adv, correct, real = self._pad_to_global_rows(kept, adv, correct, groups)
        n_mb = max(1, min(cfg.mini_batches, len(kept)))
        # mini-batches of whole rows, interleaved so every mini-batch mixes groups and outcomes
        order = [list(range(len(kept)))[j::n_mb] for j in range(n_mb)]
        old_logp = None
        if cfg.ppo_epochs > 1 or n_mb > 1:
            old_logp = []  # per row [len(seq) - 1]: right padding, so a row's positions never shift
            with torch.no_grad():
                for s in range(0, len(kept), cfg.micro_batch_rows):
                    chunk = kept[s:s + cfg.micro_batch_rows]
                    lp = self._logprobs(chunk)[0]
                    old_logp += [lp[i, :len(r.prompt_ids) + len(r.response_ids) - 1] for i, r in enumerate(chunk)]
        n_tok = 0
        metrics: dict = {}
        n_updates = 0
        for _ in range(cfg.ppo_epochs):
            for rows in order:
                m = self._mini_step([kept[i] for i in rows], adv[rows], correct[rows], real[rows],
                                    old_rows=None if old_logp is None else [old_logp[i] for i in rows])
                n_tok += m.pop("_tokens")
                n_updates += 1
                for k, v in m.items():  # average over the updates of this batch
                    metrics[k] = metrics.get(k, 0.0) + (v - metrics.get(k, 0.0)) / n_updates
        self.result.tokens += n_tok
        self.model.eval()
        return metrics

    def _pad_to_global_rows(self, kept, adv, correct, groups):
        """Under FSDP every rank must run the same forwards and backwards (each one all-gathers
        and reduce-scatters), so ranks with fewer kept rows pad with filler rows that carry no
        loss. Returns (rows, advantages, correct, real [n] bool)."""
        n_real = len(kept)
        n_rows = n_real if self.world == 1 else int(self._global_max(n_real))
        filler = (kept[:1] or [groups[0][0]]) * (n_rows - n_real)
        pad = n_rows - n_real
        real = torch.arange(n_rows) < n_real
        return (kept + filler, torch.cat([adv, adv.new_zeros(pad)]),
                torch.cat([correct, correct.new_zeros(pad)]), real)

    def _mini_step(self, rows: list[Rollout], adv, correct, real, *, old_rows) -> dict:
        """One optimizer step on `rows` (micro-batched); real [n] bool marks rows that carry
        loss (the rest pad an FSDP rank); old_rows: per-row old log-probs or None (on-policy:
        the current log-probs, detached)."""
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        total_resp = sum(len(r.response_ids) for r, ok in zip(rows, real.tolist()) if ok)
        ent_sum, n_tok, metrics = 0.0, 0, {}
        for s in range(0, len(rows), cfg.micro_batch_rows):
            chunk = rows[s:s + cfg.micro_batch_rows]
            logp, ent, mask = self._logprobs(chunk)  # [b, W-1] each
            mask = mask * real[s:s + len(chunk)].unsqueeze(-1).to(mask.dtype)  # filler rows: no loss
            old = logp.detach() if old_rows is None else _pad_rows(old_rows[s:s + len(chunk)], logp)
            out = policy_loss(logp, old, adv[s:s + len(chunk)], correct[s:s + len(chunk)], mask, cfg.loss)
            share = mask.sum().item() / max(1, total_resp)
            (out.loss * share).backward()
            ent_sum += float((ent.detach() * mask).sum())
            n_tok += int(mask.sum())
            for k, v in out.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + v * share
        metrics["entropy"] = ent_sum / max(1, total_resp)
        params = [p for p in self.model.parameters() if p.requires_grad]
        gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        metrics["grad_norm"] = gnorm
        metrics["_tokens"] = n_tok
        if not math.isfinite(gnorm) or (cfg.grad_norm_skip is not None and gnorm > cfg.grad_norm_skip):
            metrics["skipped"] = 1
            self.opt.zero_grad(set_to_none=True)
            return metrics
        self.opt.step()
        return metrics

    def _train_mode(self) -> None:
        self.model.train()
        for m in self.frozen_towers:
            m.eval()

    # ------------------------------------------------------------ loop and held-out reward

    def train(self, steps: int | None = None, max_seconds: float | None = None) -> RLResult:
        steps = steps if steps is not None else self.cfg.steps
        t0 = time.perf_counter()
        for _ in range(steps):
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
            self.step()
        self.result.seconds += time.perf_counter() - t0
        return self.result

    def heldout_cases(self, items: int) -> list:
        """The first `items` of the interleaved held-out sequence (case 0 of every environment,
        then case 1, ...; an environment that runs out drops out). A prefix of one fixed
        sequence, so `heldout_cases(k)` is always the first k of `heldout_cases(m)`, m >= k."""
        sizes = {n: e.num_cases("heldout") for n, e in self.envs.items()}
        cases, i = [], 0
        while len(cases) < items and any(i < k for k in sizes.values()):
            for n, e in self.envs.items():
                if i < sizes[n] and len(cases) < items:
                    cases.append((n, e.case(i, split="heldout")))
            i += 1
        return cases

    @torch.no_grad()
    def heldout_reward(self, items: int | None = None, *, batch: int = 32,
                       deadline: float | None = None, temperature: float = 0.0) -> HeldoutReward:
        """Mean greedy reward on a fixed slice of the held-out split: case i of every
        environment, then case i + 1, ... (so any prefix is balanced). With a `deadline`
        (time.perf_counter() value) it stops between batches; the count says how many items
        were scored, and `heldout_reward(items=that count)` scores exactly the same ones again.
        `temperature` > 0 scores one sample per item (fixed seed) instead of the greedy answer:
        the policy RL optimises, which greedy decoding hides while the argmax does not flip.
        Returns the mean reward in [0, 1], the number of items and the per-environment means."""
        items = items if items is not None else self.cfg.heldout_items
        cases = self.heldout_cases(items)
        greedy = SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=temperature,
                                stop_token_ids=_eos(self.tok), vocab_limit=len(self.tok))
        scores: list[float] = []
        for s in range(0, len(cases), batch):
            if deadline is not None and scores and time.perf_counter() >= deadline:
                break
            chunk = cases[s:s + batch]
            outs = self.engine.generate([self._prompt_inputs(c) for _, c in chunk], 1, greedy, seed=s)
            scores += [self._score(n, c, g[0]) for (n, c), g in zip(chunk, outs)]
        return HeldoutReward(reward=sum(scores) / len(scores) if scores else 0.0, items=len(scores),
                             by_env=_per_env(cases, scores))

    def answer_prior_reward(self, items: int) -> HeldoutReward:
        """The held-out reward of the answer prior: per environment, one fixed response (the
        worked answer for its most common reference) scored on every case of the slice that
        `heldout_reward(items)` scores. A policy that only learned which answer is most frequent
        reaches this, so RL gains are to be read against it. `by_env[env]["answer"]` is the
        fixed response."""
        cases = self.heldout_cases(items)
        answers = {}
        for name in dict.fromkeys(n for n, _ in cases):
            mine = [c for n, c in cases if n == name]
            common = Counter(repr(c.reference) for c in mine).most_common(1)[0][0]
            exemplar = next(c for c in mine if repr(c.reference) == common)
            answers[name] = self.envs[name].sft_response(exemplar) or str(exemplar.reference)
        scores = [float(self.mixture.score(n, answers[n], c)) for n, c in cases]
        by_env = {k: {**v, "answer": answers[k]} for k, v in _per_env(cases, scores).items()}
        return HeldoutReward(reward=sum(scores) / len(scores) if scores else 0.0, items=len(scores), by_env=by_env)


def numeric_closeness(result, case) -> float:
    """1 - |answer - reference| / max(1, |reference|), clipped to [0, 1]: how near a numeric
    answer (a VerifyResult's extracted text) came; 0 when either is not a number."""
    try:
        got = float(str(result.extracted).replace(",", ""))
        ref = float(str(case.reference).replace(",", ""))
    except (TypeError, ValueError):
        return 0.0
    if not (math.isfinite(got) and math.isfinite(ref)):
        return 0.0
    return max(0.0, 1.0 - abs(got - ref) / max(1.0, abs(ref)))


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has no pad token id: RL pads rollouts with it")
    return int(pad)


def _eos(tokenizer) -> tuple[int, ...]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return () if eos is None else (int(eos),)


def _per_env(cases: list, scores: list[float]) -> dict[str, dict]:
    """(env name, case) pairs and their scores -> {name: {"reward": mean, "items": count}}."""
    by_env: dict[str, list[float]] = {}
    for (name, _), sc in zip(cases, scores):
        by_env.setdefault(name, []).append(sc)
    return {k: {"reward": sum(v) / len(v), "items": len(v)} for k, v in by_env.items()}


def _concat_multimodal(extras: list[dict]) -> dict:
    """Concatenate rows' images and series in row order (the model splices them in order)."""
    pix = [e["pixel_values"] for e in extras if e.get("pixel_values") is not None]
    series = [s for e in extras for s in (e.get("time_series") or [])]
    rates = [r for e in extras for r in (e.get("sampling_rates") or [])]
    out = {}
    if pix:
        out["pixel_values"] = torch.cat(pix)
    if series:
        out["time_series"], out["sampling_rates"] = series, rates
    return out


def _pad_rows(rows: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Per-row old log-probs [T_i] -> [b, W] right-padded like `like` (same rows, new batch)."""
    out = torch.zeros_like(like)
    for i, r in enumerate(rows):
        n = min(r.numel(), like.shape[1])
        out[i, :n] = r[:n]
    return out
