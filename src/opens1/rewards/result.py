"""The result type every verifier returns (kept in its own module to avoid import cycles)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VerifyResult:
    """`score` in [0, 1]; `reason` says why, for logs and debugging reward hacking;
    `extracted` is the answer the verifier graded (None when nothing was found)."""

    score: float
    reason: str
    extracted: str | None = None

    def __post_init__(self):
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")

    @property
    def correct(self) -> bool:
        return self.score >= 1.0
