"""`opens1 data ...`: corpus building subcommands, each a `main(argv)` in its own module."""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "parse-pdf": ("opens1.corpus.pdf", "PDF pages to Markdown with page-level routing (cheap parser, OCR, VLM)"),
    "train-classifier": ("opens1.corpus.classify", "train the science-domain classifier"),
    "filter": ("opens1.corpus.filters", "garble/quality heuristics and scientific-purity filtering"),
    "dedup": ("opens1.corpus.dedup", "exact and MinHash-LSH near-duplicate removal"),
    "build": ("opens1.corpus.pipeline", "the whole pipeline (filter, validity, dedup, shard) locally or on Ray"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: opens1 data <command> [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name.ljust(16)}  {text}")
        return 0
    if argv[0] not in COMMANDS:
        from opens1.cli.util import did_you_mean

        print(f"opens1 data: unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; known: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0)
