"""Without a working sandbox the code reward refuses to run model-written code, and says
how to fix it or opt in; the opt-in runs it with the limits that remain. Runs everywhere:
bubblewrap is hidden with OPENS1_BWRAP=""."""

import pytest

from opens1.rewards import verify
from opens1.rewards.code import SandboxUnavailable, isolation, run_python
from opens1.rewards.sandbox import UNISOLATED_ENV

GOOD = "```python\ndef add(a, b):\n    return a + b\n```"
BAD = "```python\ndef add(a, b):\n    return a - b\n```"
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]


@pytest.fixture
def no_bwrap(monkeypatch):
    monkeypatch.setenv("OPENS1_BWRAP", "")
    monkeypatch.delenv(UNISOLATED_ENV, raising=False)
    assert isolation() == (None, "bubblewrap (bwrap) is not installed")


def test_refuses_without_a_sandbox_and_says_how_to_opt_in(no_bwrap):
    for call in (lambda: verify("code", GOOD, TESTS), lambda: run_python("print(1)"),
                 lambda: verify("code", GOOD, {"io": [{"stdin": "", "stdout": ""}]})):
        with pytest.raises(SandboxUnavailable) as e:
            call()
        msg = str(e.value)
        assert "bubblewrap" in msg and f"{UNISOLATED_ENV}=1" in msg and "allow_unisolated=True" in msg


def test_an_answer_without_code_is_graded_without_a_sandbox(no_bwrap):
    assert verify("code", "", TESTS).score == 0.0  # nothing to run: nothing to refuse
    assert verify("code", "<think>```python\nprint(1)\n```", TESTS).score == 0.0


def test_opt_in_by_argument_runs_unisolated(no_bwrap):
    assert verify("code", GOOD, TESTS, allow_unisolated=True).score == 1.0
    assert verify("code", BAD, TESTS, allow_unisolated=True).score == 0.0
    r = run_python("print(6 * 7)", allow_unisolated=True)
    assert r.stdout.strip() == "42" and r.isolation == "unisolated"


def test_opt_in_by_environment_variable(no_bwrap, monkeypatch):
    monkeypatch.setenv(UNISOLATED_ENV, "1")
    assert verify("code", GOOD, TESTS).score == 1.0
    assert verify("code", BAD, TESTS).score == 0.0


def test_a_broken_bwrap_is_refused_with_its_error(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OPENS1_BWRAP", str(fake))
    monkeypatch.delenv(UNISOLATED_ENV, raising=False)
    mode, why = isolation()
    assert mode is None and "Permission denied" in why
    with pytest.raises(SandboxUnavailable, match="no sandbox could start"):
        run_python("print(1)")
