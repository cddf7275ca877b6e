"""Evaluation: environments x (local model | OpenAI-compatible endpoint) -> saved
generations, multi-sample scores with standard errors, JSON + Markdown reports.
See harness.py for the protocol and run.py for one run (`opens1 eval`: opens1/cli/eval.py)."""

from opens1.eval.backends import EVAL_SAMPLING, EndpointBackend, LocalBackend
from opens1.eval.harness import generate_records, rescore_records, summarize

__all__ = ["EVAL_SAMPLING", "EndpointBackend", "LocalBackend", "generate_records", "rescore_records", "summarize"]
