"""The command line's shared pieces (cli/util.py): defaults in every --help, one-line errors
for user mistakes (tracebacks with --debug / OPENS1_DEBUG), comma or space lists, suggestions,
the [api] extra named when openai/httpx are missing."""

from __future__ import annotations

import argparse
import sys

import pytest

from opens1.cli import COMMANDS, main
from opens1.cli.util import (HelpFormatter, UserError, add_list_argument, did_you_mean, require, run_main,
                             split_list)


class Captured(BaseException):
    def __init__(self, parser):
        super().__init__("captured")
        self.parser = parser


def _parser_of(argv: list[str]) -> argparse.ArgumentParser:
    """The real parser a command line reaches (nothing runs)."""
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        main(argv)
    except Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = real
    raise AssertionError(f"{argv} reached no argparse parser")


def _all_parsers():
    data = ["parse-pdf", "train-classifier", "filter", "dedup", "build"]
    for argv in [[c] for c in COMMANDS if c != "data"] + [["data", d] for d in data]:
        p = _parser_of(argv)
        yield " ".join(argv), p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{' '.join(argv)} {name}", sub


def test_every_subcommand_shows_its_defaults_in_help():
    checked = 0
    for name, parser in _all_parsers():
        fmt = parser._get_formatter()
        assert isinstance(fmt, HelpFormatter), name
        for action in parser._actions:
            if action.default is None or action.default is False or action.default in (argparse.SUPPRESS, []) \
                    or not action.option_strings:
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            assert "default" in fmt._get_help_string(action).lower(), f"{name} {action.option_strings[0]}"
            checked += 1
    assert checked > 60


def test_eval_help_shows_the_protocol_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--temperature TEMPERATURE (default: 0.7)" in out and "(default: 1024)" in out
    assert "thinking off (default: on" in out and "--seed SEED (default: 0)" in out


def test_lists_take_commas_and_spaces():
    assert split_list("a,b c") == ["a", "b", "c"] and split_list(["a, b", "a", "c"]) == ["a", "b", "c"]
    p = argparse.ArgumentParser()
    add_list_argument(p, "--envs", default=["x"])
    assert p.parse_args([]).envs == ["x"]
    assert p.parse_args(["--envs", "a,b", "c", "--envs", "d"]).envs == ["a", "b", "c", "d"]


def test_suggestions():
    known = ["chem/ring_count", "chem/atom_count", "logic/sorting"]
    assert "chem/ring_count" in did_you_mean("chem/ring_cont", known)
    assert did_you_mean("ring_count", known).startswith(" (did you mean chem/ring_count")
    assert did_you_mean("zzz", known) == ""


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", "/nonexistent", "--tasks", "chem/ring_count"], "model directory '/nonexistent' does not exist"),
    (["eval", "--model", "/nonexistent", "--tasks", "chem/ring_cont,logic/sorting"],
     "unknown task 'chem/ring_cont' (did you mean chem/ring_count"),
    (["eval", "--model", "/nonexistent", "--tasks", "astrology/*"], "no task matches 'astrology/*'"),
    (["eval", "--rescore", "/nonexistent/generations.jsonl"], "/nonexistent/generations.jsonl: no such file"),
    (["rl", "--model", "/nonexistent", "--envs", "logic/countin", "--out", "o"],
     "unknown environment 'logic/countin' (did you mean logic/counting"),
    (["rl", "--model", "/nonexistent", "--envs", "logic/counting", "--out", "o"], "model directory '/nonexistent'"),
    (["rl", "--model", "m", "--out", "o"], "give --envs NAME... and/or --data FILE..."),
    (["data", "build", "/nonexistent.jsonl", "-o", "out"], "no input file '/nonexistent.jsonl'"),
    (["speedrun", "--rl-envs", "chem/ring_count,logic/sortin"], "unknown environment 'logic/sortin'"),
    (["speedrun", "--data", "/nonexistent"], "data root '/nonexistent' does not exist"),
    (["model", "generate", "--model", "/nonexistent", "--ids", "1"], "/nonexistent"),
    (["model", "init", "--preset", "tinyy", "--out", "x"], "unknown preset 'tinyy' (did you mean tiny?)"),
    (["eval", "--model", "m", "--data", "/nonexistent.jsonl"], "--data '/nonexistent.jsonl': no such file"),
])
def test_user_mistakes_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"opens1 {argv[0]}"), err


def test_misspelt_commands_get_suggestions(capsys):
    assert main(["evl"]) == 2 and "unknown command 'evl' (did you mean eval?)" in capsys.readouterr().err
    assert main(["data", "buidl"]) == 2 and "(did you mean build?)" in capsys.readouterr().err


def test_a_malformed_generations_line_is_named(tmp_path, capsys):
    gens = tmp_path / "generations.jsonl"
    gens.write_text('{"task": "x"}\n{oops\n')
    assert main(["eval", "--rescore", str(gens), "--out", str(tmp_path)]) == 2
    assert f"{gens}:2: not JSON" in capsys.readouterr().err


def test_debug_shows_the_traceback(monkeypatch):
    argv = ["eval", "--model", "/nonexistent", "--tasks", "chem/ring_count"]
    with pytest.raises(UserError):
        main(argv + ["--debug"])
    with pytest.raises(UserError):
        main(["--debug", *argv])
    monkeypatch.setenv("OPENS1_DEBUG", "1")
    with pytest.raises(UserError):
        main(argv)


def test_run_main_passes_bugs_through():
    def broken(argv):
        raise KeyError("a bug, not a user mistake")

    with pytest.raises(KeyError):
        run_main(broken, [], "opens1 x")
    assert run_main(lambda argv: (_ for _ in ()).throw(ValueError("bad\nvalue")), [], "opens1 x") == 2


@pytest.mark.parametrize("argv,module", [
    (["eval", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", "--tasks", "logic/sorting"], "openai"),
    (["data", "parse-pdf", "a.pdf", "--out", "o", "--vlm-endpoint", "http://127.0.0.1:9/v1", "--vlm-model", "m"],
     "openai"),
    (["data", "build", "IN", "-o", "o", "--judge-endpoint", "http://127.0.0.1:9/v1"], "httpx"),
])
def test_missing_api_client_names_the_extra(argv, module, monkeypatch, capsys, tmp_path):
    (tmp_path / "IN").write_text('{"text": "x"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"needs the '{module}' package: pip install \"opens1[api]\"" in err and len(err.splitlines()) == 1


def test_require_passes_when_installed():
    require("json", "anything")
