"""Evaluation: environments x (local model | OpenAI-compatible endpoint) -> saved
generations, multi-sample scores with standard errors, JSON + Markdown reports.
See harness.py for the protocol and cli.py for `opens1 eval`."""

from opens1.eval.backends import EVAL_SAMPLING, EndpointBackend, LocalBackend
from opens1.eval.harness import generate_records, rescore_records, summarize

__all__ = ["EVAL_SAMPLING", "EndpointBackend", "LocalBackend", "generate_records", "rescore_records", "summarize"]
