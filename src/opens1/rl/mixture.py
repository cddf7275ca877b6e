"""Mixture of Rewards: route each data source to a verifier, weight and normalise.

Intern-S1 turns every kind of feedback into one scalar reward ("MoR"): bootcamp
tasks use their own verify function, math uses rule verifiers, code uses
execution. Here a config maps a data source (a case's `meta["source"]` or an
environment name) to a rule:

    MixtureOfRewards.from_dict({
        "sources": {
            "gsm8k":    {"verifier": "number", "options": {"rel_tol": 1e-6}},
            "chem/*":   {"verifier": "env"},            # the environment's own verify
            "math500":  {"verifier": "math", "weight": 2.0},
        },
        "normalize": "none" | "minmax" | "zscore",   # per-source, over a batch
        "format_penalty": 0.0,                       # reward when no answer was found
    })

`score(source, prediction, case)` -> float. Sources are matched exactly, then by
the longest `prefix/*` pattern; an unknown source is a ValueError, because silently
scoring it 0 would train the policy away from a whole task family.
`normalize_batch(sources, rewards)` normalises per source, so a family with a
wide reward range cannot dominate the policy gradient of the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from opens1.envs import env_class
from opens1.rewards import KINDS, VerifyResult, verify

_NORMALIZE = ("none", "minmax", "zscore")


@dataclass(frozen=True)
class RewardRule:
    verifier: str  # a KINDS name, or "env" for the case's environment
    weight: float = 1.0
    options: dict = field(default_factory=dict)


@dataclass
class MixtureOfRewards:
    rules: dict[str, RewardRule]
    normalize: str = "none"
    format_penalty: float = 0.0  # added (usually <= 0) when the response had no answer

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "MixtureOfRewards":
        if "sources" not in cfg or not isinstance(cfg["sources"], dict) or not cfg["sources"]:
            raise ValueError("mixture config needs a non-empty 'sources' mapping")
        unknown = set(cfg) - {"sources", "normalize", "format_penalty"}
        if unknown:
            raise ValueError(f"unknown mixture config keys: {sorted(unknown)}")
        rules = {}
        for source, spec in cfg["sources"].items():
            if isinstance(spec, str):
                spec = {"verifier": spec}
            verifier = spec.get("verifier")
            if verifier != "env" and verifier not in KINDS:
                raise ValueError(f"source {source!r}: unknown verifier {verifier!r}; "
                                 f"use 'env' or one of {sorted(KINDS)}")
            weight = float(spec.get("weight", 1.0))
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"source {source!r}: weight must be a finite number >= 0")
            rules[source] = RewardRule(verifier, weight, dict(spec.get("options", {})))
        normalize = cfg.get("normalize", "none")
        if normalize not in _NORMALIZE:
            raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
        return cls(rules, normalize, float(cfg.get("format_penalty", 0.0)))

    def rule(self, source: str) -> RewardRule:
        if source in self.rules:
            return self.rules[source]
        # Longest matching prefix wins, so "chem/qm9_*" can override "chem/*".
        best = None
        for pattern in self.rules:
            if pattern.endswith("*") and source.startswith(pattern[:-1]):
                if best is None or len(pattern) > len(best):
                    best = pattern
        if best is None:
            raise ValueError(f"no reward rule for data source {source!r}; configured: {sorted(self.rules)}")
        return self.rules[best]

    def verify(self, source: str, prediction: str | None, case) -> VerifyResult:
        rule = self.rule(source)
        if rule.verifier == "env":
            # No data root is needed to verify, so the environment is built without one.
            return env_class(case.meta["env"])(None).verify(prediction, case)
        reference = case.reference if hasattr(case, "reference") else case["reference"]
        return verify(rule.verifier, prediction, reference, **rule.options)

    def score(self, source: str, prediction: str | None, case) -> float:
        """Weighted reward for one response (before batch normalisation)."""
        rule = self.rule(source)
        res = self.verify(source, prediction, case)
        reward = rule.weight * res.score
        # Penalise only a missing answer (format failure), not a wrong one: wrong answers
        # already get 0, and mixing the two signals would blur the policy gradient.
        if res.extracted is None and res.score == 0.0 and res.reason.startswith("no answer"):
            reward += self.format_penalty
        return reward

    def normalize_batch(self, sources: list[str], rewards: list[float]) -> list[float]:
        """Per-source normalisation of a batch of rewards (see module docstring)."""
        if len(sources) != len(rewards):
            raise ValueError("sources and rewards differ in length")
        if self.normalize == "none":
            return list(rewards)
        out = list(rewards)
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(sources):
            groups.setdefault(s, []).append(i)
        for idx in groups.values():
            vals = [rewards[i] for i in idx]
            if self.normalize == "minmax":
                lo, hi = min(vals), max(vals)
                for i in idx:
                    out[i] = (rewards[i] - lo) / (hi - lo) if hi > lo else 0.0
            else:
                mean = sum(vals) / len(vals)
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
                for i in idx:
                    out[i] = (rewards[i] - mean) / std if std > 0 else 0.0
        return out
