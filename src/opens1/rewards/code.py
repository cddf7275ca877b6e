"""Code verifier: run a model's Python solution against tests in the sandbox (sandbox.py).

Two kinds of reference:
- io cases {"io": [{"stdin", "stdout"}, ...]}: the program runs in a sandbox and its
  stdout is compared here, outside, with the expected output;
- test snippets (a string or a list of them, e.g. "assert add(1, 2) == 3"): the solution
  runs in one sandbox, the tests in another (sandbox_worker.py), and calls from the tests
  to the solution's functions cross a pipe as plain data. The verdict is written by the
  tests process to a file descriptor that only it holds and is read here; nothing the
  solution prints, exits with or patches can change it.

docs/sandbox.md states the threat model and what is tested.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass

from opens1.rewards.extract import strip_thinking, tail
from opens1.rewards.result import VerifyResult
from opens1.rewards.sandbox import (RunResult, Sandbox, SandboxLimits, SandboxUnavailable, _resolve, isolation,
                                    run_python)

__all__ = ["verify_code", "extract_code", "run_python", "run_tests", "SandboxLimits", "RunResult",
           "SandboxUnavailable", "isolation"]


# --- the verifier -----------------------------------------------------------------

_FENCE_RE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(prediction: str | None) -> str | None:
    """The last fenced code block after `</think>` (or the whole answer if unfenced)."""
    if prediction is None:
        return None
    body = strip_thinking(str(prediction))
    if body is None:
        return None
    body = tail(body, 65536)
    blocks = _FENCE_RE.findall(body)
    if blocks:
        return blocks[-1]
    return body if body.strip() else None


def _norm_out(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip().splitlines())


@dataclass(frozen=True)
class Verdict:
    passed: int
    total: int
    failures: list[str]  # the first few, "test i: Error: message"
    timed_out: bool
    solution: RunResult  # the solution process: its stdout/stderr, for logs only
    reason: str = ""  # why there is no verdict (a crash, the wall clock)


def run_tests(code: str, tests: list[str], limits: SandboxLimits = SandboxLimits(), *,
              allow_unisolated: bool = False) -> Verdict:
    """Run test snippets against `code`: the solution and the tests in two sandboxes,
    joined by two pipes; the verdict comes from the tests process only (see above)."""
    mode = _resolve(allow_unisolated)
    t0 = time.monotonic()
    req_r, req_w = os.pipe()  # tests -> solution
    rep_r, rep_w = os.pipe()  # solution -> tests
    verdict = tempfile.TemporaryFile(prefix="opens1-verdict-")
    sol = tst = None
    try:
        sol = Sandbox(mode, limits, {"mode": "solution", "main": "/sbx/main.py", "fds": {"r": req_r, "w": rep_w}},
                      {"/sbx/main.py": code.encode("utf-8")}, pass_fds=(req_r, rep_w))
        tst = Sandbox(mode, limits, {"mode": "tests", "tests": "/sbx/tests.json",
                                     "fds": {"r": rep_r, "w": req_w, "v": verdict.fileno()}},
                      {"/sbx/tests.json": json.dumps(list(tests)).encode("utf-8")},
                      pass_fds=(rep_r, req_w, verdict.fileno()))
    finally:
        for fd in (req_r, req_w, rep_r, rep_w):  # the sandboxes hold their ends; EOF follows an exit
            os.close(fd)
        if tst is None:
            verdict.close()
            if sol is not None:
                sol.kill()
                sol.result(timed_out=False, wall=0.0)
    exited = tst.wait(t0 + limits.wall_seconds)
    tst.kill()
    sol.wait(min(time.monotonic() + 1.0, t0 + limits.wall_seconds))  # it ends on EOF from the tests
    sol.kill()
    wall = time.monotonic() - t0
    tres, sres = tst.result(timed_out=not exited, wall=wall), sol.result(timed_out=not exited, wall=wall)
    with verdict:
        verdict.seek(0)
        raw = verdict.read(1 << 20)
    try:
        v = json.loads(raw)
        passed, total = int(v["passed"]), int(v["total"])
        if total == len(tests) and 0 <= passed <= total:
            return Verdict(passed, total, [str(f) for f in v["failures"]], timed_out=False, solution=sres)
    except (ValueError, KeyError, TypeError):
        pass
    err = tres.stderr.strip().splitlines()
    why = "wall-clock limit exceeded" if not exited else (
        f"tests did not complete (exit {tres.returncode}" + (f": {err[-1][:120]}" if err else "") + ")")
    return Verdict(0, len(tests), [], timed_out=not exited, solution=sres, reason=why)


def verify_code(prediction: str | None, reference, *, partial: bool = False,
                limits: SandboxLimits | None = None, allow_unisolated: bool = False, **opts) -> VerifyResult:
    """`reference`: test code (str), a list of test snippets, or {"io": [{"stdin", "stdout"}, ...]}.
    Raises SandboxUnavailable where no sandbox works and `allow_unisolated` (or the
    OPENS1_ALLOW_UNISOLATED_CODE=1 environment variable) does not opt in to running without one."""
    limits = limits or SandboxLimits(**{k: opts[k] for k in opts if k in SandboxLimits.__dataclass_fields__})
    code = extract_code(prediction)
    if code is None:
        return VerifyResult(0.0, "no code")
    if isinstance(reference, dict) and "io" in reference:
        cases = reference["io"]
        passed, notes, net_ok = 0, "", True
        for case in cases:
            r = run_python(code, case.get("stdin", ""), limits, allow_unisolated=allow_unisolated)
            net_ok &= r.network_isolated
            if r.returncode == 0 and not r.timed_out and _norm_out(r.stdout) == _norm_out(case["stdout"]):
                passed += 1
            elif r.timed_out:
                notes = " (timeout)"
        return _grade(passed, len(cases), partial=partial, notes=notes, net_ok=net_ok)
    tests = [reference] if isinstance(reference, str) else list(reference)
    if not tests:
        raise ValueError("code reference has no tests")
    if not all(isinstance(t, str) for t in tests):
        raise ValueError("code tests must be strings of Python code")
    r = run_tests(code, tests, limits, allow_unisolated=allow_unisolated)
    if r.reason:
        return VerifyResult(0.0, r.reason, code[:200])
    notes = f" ({r.failures[0]})" if r.failures and r.passed < r.total else ""
    return _grade(r.passed, r.total, partial=partial, notes=notes[:200], net_ok=r.solution.network_isolated)


def _grade(passed: int, total: int, *, partial: bool, notes: str, net_ok: bool) -> VerifyResult:
    score = passed / total if partial else float(passed == total)
    reason = f"{passed}/{total} tests passed{notes}" + ("" if net_ok else "; network not isolated")
    return VerifyResult(score, reason)
