"""Every command line in README.md and docs/*.md parses with the real argument parsers (nothing
runs), and the cheap ones run end to end, so a documented command cannot drift from the code.

Command lines are taken from fenced `bash`/`sh`/`shell` blocks (every line), `console` blocks
(the `$ ` lines) and inline code spans that start a command and pass an option
(`opens1 eval --list`); `\\` continuations are joined, `&&`/`;` chains split, comments and a
trailing `&` dropped. A synopsis (`[--host H]`, `a|b`, `...`) is not a command line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
STARTS = ("opens1 ", "python -m opens1", "torchrun ", "python bench/")


def _commands_of(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    lines: list[str] = []
    for lang, block in re.findall(r"^[ \t]*```(\w*)[ \t]*\n(.*?)^[ \t]*```", text, re.S | re.M):
        for line in block.splitlines():
            line = line.strip()
            if lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            elif lang not in ("bash", "sh", "shell"):
                continue
            lines += re.split(r"\s*(?:&&|;)\s*", line)
    for span in re.findall(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", text):
        span = " ".join(span.split())
        if span.startswith(STARTS) and re.search(r"\s-(?!m\s)", span) and not re.search(r"\[|\||\.\.\.", span):
            lines.append(span)
    out = []
    for line in lines:
        line = line.strip().removesuffix("&").strip()
        if line.startswith(STARTS) and "..." not in line:
            out.append(line)
    return out


def documented() -> list[tuple[str, str]]:
    """(file name, command line) for every documented command."""
    return [(p.relative_to(ROOT).as_posix(), c) for p in DOCS for c in _commands_of(p.read_text(encoding="utf-8"))]


class Parsed(BaseException):
    """Raised right after a real parser accepted the arguments: nothing runs."""

    def __init__(self, namespace):
        super().__init__("parsed")
        self.namespace = namespace


@contextlib.contextmanager
def parse_only():
    real = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = real


def _bench(script: str):
    spec = importlib.util.spec_from_file_location(f"bench_doc_{Path(script).stem}", ROOT / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _target(argv: list[str]):
    """(callable taking argv, argv) for a command line split into words."""
    if argv[0] == "opens1":
        return importlib.import_module("opens1.cli").main, argv[1:]
    if argv[0] == "torchrun":  # torchrun's own options up to `-m MODULE`
        argv = ["python", *argv[argv.index("-m"):]]
    if argv[:2] == ["python", "-m"]:
        name = argv[2]
        return importlib.import_module(name).main, argv[3:]
    if argv[0] == "python" and argv[1].startswith("bench/"):
        main = _bench(argv[1]).main
        if inspect.signature(main).parameters:
            return main, argv[2:]

        def via_sys_argv(args, main=main):
            old, sys.argv = sys.argv, [argv[1], *args]
            try:
                return main()
            finally:
                sys.argv = old

        return via_sys_argv, argv[2:]
    raise AssertionError(f"no parser for {argv[0]}")


def parse_command(line: str):
    """The namespace a documented command line parses to (None for a --help line or a
    dispatcher that printed its own usage)."""
    argv = shlex.split(line, comments=True)
    fn, args = _target(argv)
    with parse_only():
        try:
            rc = fn(args)
        except Parsed as p:
            return p.namespace
        except SystemExit as e:  # --help, or a parser error
            assert e.code == 0, f"{line!r} exits {e.code}"
            return None
    assert rc == 0, f"{line!r} returned {rc} before its parser ran"
    return None


def test_the_docs_have_command_lines():
    cmds = documented()
    files = {f for f, _ in cmds}
    assert len(cmds) >= 80 and "README.md" in files and "docs/your-data.md" in files
    # the three README lines issue 18 found broken are among them
    lines = [c for _, c in cmds]
    assert any("opens1 data build" in c for c in lines) and any(c.startswith("torchrun") for c in lines)


@pytest.mark.parametrize("where,line", documented(), ids=lambda v: v if "/" in v and len(v) < 20 else None)
def test_documented_command_parses(where, line, capsys):
    parse_command(line)


def test_known_aliases_parse():
    ns = parse_command("opens1 eval --model m --tasks chem/ring_count --items 50")
    assert ns.n_items == 50 and ns.tasks == ["chem/ring_count"]
    ns = parse_command("torchrun --nproc_per_node=2 -m opens1.cli.train --preset sft --init-from runs/speedrun/model")
    assert ns.init_from == "runs/speedrun/model"
    ns = parse_command("opens1 data build --input corpus.jsonl --out shards/")
    assert ns.more_inputs == ["corpus.jsonl"] and ns.output == "shards/"
    ns = parse_command("opens1 eval --model m --tasks a,b c --tasks d")
    assert ns.tasks == ["a", "b", "c", "d"]
    ns = parse_command("opens1 rl --model m --envs a b,c --out o")
    assert ns.envs == ["a", "b", "c"]
    ns = parse_command("opens1 speedrun --rl-envs a,b")
    assert ns.rl_envs == ["a", "b"]


def test_a_wrong_flag_is_caught():
    with pytest.raises(AssertionError, match="exits 2"):
        parse_command("opens1 eval --model m --tasks x --itemz 50")


# ---------------------------------------------------------------- the cheap ones, end to end

CHEAP = ("opens1 tokenizer info", "opens1 tokenizer encode", "opens1 tokenizer decode", "opens1 eval --list",
         "opens1 data --help", "opens1 model params --all", "opens1 train --preset sft --print-config")


@pytest.mark.parametrize("line", sorted({c for _, c in documented() if c.startswith(CHEAP)
                                         and "--tokenizer ../" not in c and "/tmp/" not in c}))
def test_cheap_commands_run(line, capsys):
    from opens1.cli import main

    assert main(shlex.split(line, comments=True)[1:]) == 0, line
    assert capsys.readouterr().out.strip()


def _run_in(tmp_path, lines: list[str]) -> None:
    from opens1.cli import main

    for line in lines:
        argv = [a.replace("/tmp/", f"{tmp_path}/") for a in shlex.split(line, comments=True)]
        assert main(argv[1:]) == 0, line


def test_models_md_walkthrough_runs(tmp_path, capsys):
    lines = [c for _, c in documented() if c.startswith(("opens1 model init", "opens1 model export",
                                                        "opens1 model generate"))]
    assert len(lines) >= 4
    _run_in(tmp_path, lines)
    assert (tmp_path / "tiny_internvl" / "config.json").is_file()


@pytest.mark.slow  # trains the quick tokenizer (seconds), then reads and exports it
def test_tokenizer_md_walkthrough_runs(tmp_path, capsys):
    lines = [c for _, c in documented() if c.startswith(("opens1 tokenizer train --preset quick",
                                                        "opens1 tokenizer info --tokenizer /tmp/tok",
                                                        "opens1 tokenizer export-hf"))]
    assert len(lines) == 3
    _run_in(tmp_path, lines)
    assert (tmp_path / "hf_tok").is_dir()
