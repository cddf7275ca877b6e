"""`opens1 ...`: the command line. Thin on purpose: each subcommand lives in its
own wing as a `main(argv) -> int` function, imported only when it is called, so
`opens1 --help` stays instant and a broken wing cannot break the others."""

from __future__ import annotations

import importlib
import sys

from opens1 import __version__
from opens1.cli.util import did_you_mean, run_main

# subcommand -> (module whose main(argv) runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "speedrun": ("opens1.cli.speedrun", "train a tiny Intern-S1 end to end on real data, with a report"),
    "train": ("opens1.cli.train", "pretraining, multimodal pretraining and SFT (torchrun-ready)"),
    "rl": ("opens1.cli.rl", "online RL with a mixture of rewards (GRPO, OREAL, KL-Cov)"),
    "eval": ("opens1.cli.eval", "score a model or an OpenAI-compatible endpoint on environments"),
    "serve": ("opens1.cli.serve", "OpenAI-compatible API server and web UI"),
    "tokenizer": ("opens1.cli.tokenizer", "train, inspect and export the dynamic scientific tokenizer"),
    "data": ("opens1.cli.data", "corpus building: parse-pdf, train-classifier, filter, dedup"),
    "model": ("opens1.cli.model", "inspect presets and checkpoints: count parameters, generate"),
}


def _usage() -> str:
    lines = ["usage: opens1 <command> [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    lines += ["", "Run `opens1 <command> --help` for a command's options; `--debug` (or OPENS1_DEBUG=1)",
              "shows a full traceback instead of a one-line error."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"  # `opens1 --debug eval ...` as well as `opens1 eval ... --debug`
    argv = argv[debug:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"opens1: unknown command {name!r}{did_you_mean(name, COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_main(module.main, rest + ["--debug"] * debug, f"opens1 {name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
