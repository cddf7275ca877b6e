"""Code verifier: run a model's Python solution against tests in a sandbox.

Threat model (what this sandbox is for, and what it is not)
-----------------------------------------------------------
It contains *runaway or careless* code produced by a policy during RL and eval:
infinite loops, memory bombs, fork bombs, huge outputs, stray file writes, and
network calls. It is NOT a security boundary against a determined attacker with
a kernel exploit; for that, run the verifier inside a container or VM. Layers:

- CPU time: RLIMIT_CPU (the kernel sends SIGXCPU/SIGKILL).
- Wall time: the parent kills the whole process group after `wall_seconds`
  (catches code that sleeps or blocks instead of burning CPU).
- Memory: RLIMIT_AS (allocation fails with MemoryError inside the sandbox).
- Processes: a seccomp-BPF filter makes fork/vfork/clone/clone3 fail with EPERM.
  RLIMIT_NPROC is not enough: it is ignored for root, which CI often is.
  Side effect: no threads inside the sandbox.
- Output and files: stdout/stderr go to files capped by RLIMIT_FSIZE; the code
  runs in a fresh temporary directory (its cwd and HOME), deleted afterwards.
- Environment: scrubbed (PATH, HOME, LANG only) and `python -I` (isolated mode:
  no PYTHON* variables, no user site, script dir not on sys.path).
- Network: a new network namespace (unshare(CLONE_NEWUSER|CLONE_NEWNET)) has
  only a down loopback, so connections fail. If the kernel forbids namespaces,
  `RunResult.network_isolated` is False and the verifier's reason says so.
- Not covered: reading world-readable files, writing to world-writable
  directories like /tmp (files persist), CPU side channels.

Grading: the solution and the tests run in one process, so a solution that
deliberately forges success (e.g. `os._exit(0)` before the tests) is caught only
in the simple form: the harness must print a per-run random nonce after the last
test; exit status 0 alone is not success. Introspection attacks remain possible.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from opens1.rewards.extract import strip_thinking, tail
from opens1.rewards.result import VerifyResult


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 1 << 20  # per stream; RLIMIT_FSIZE
    max_open_files: int = 64
    block_fork: bool = True
    isolate_network: bool = True


@dataclass(frozen=True)
class RunResult:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool  # wall-clock limit hit
    network_isolated: bool
    wall_seconds: float


# --- seccomp: deny process creation -----------------------------------------------

# Syscall numbers per architecture (fork, vfork, clone, clone3); AUDIT_ARCH values.
_ARCH = {
    "x86_64": (0xC000003E, (57, 58, 56, 435)),
    "aarch64": (0xC00000B7, (220, 435)),
}
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_EPERM = 0x7FFF0000, 0x00050000 | 1


def _seccomp_program() -> bytes | None:
    """A classic-BPF filter returning EPERM for process-creating syscalls."""
    arch = _ARCH.get(platform.machine())
    if arch is None:
        return None
    audit_arch, nrs = arch
    # (code, jt, jf, k); jumps are relative to the next instruction.
    checks = [(0x15, nr) for nr in nrs]  # BPF_JEQ
    if platform.machine() == "x86_64":
        checks.append((0x35, 0x40000000))  # BPF_JGE: x32-ABI syscall numbers, deny them all
    ins = [(0x20, 0, 0, 4)]  # A = seccomp_data.arch
    ins.append((0x15, 0, len(checks) + 1, audit_arch))  # foreign arch -> allow
    ins.append((0x20, 0, 0, 0))  # A = seccomp_data.nr
    for i, (op, k) in enumerate(checks):
        ins.append((op, len(checks) - i, 0, k))  # match -> the EPERM return
    ins.append((0x06, 0, 0, _RET_ALLOW))
    ins.append((0x06, 0, 0, _RET_EPERM))
    return b"".join(struct.pack("HBBI", *i) for i in ins)


_SECCOMP = _seccomp_program()
_LIBC = ctypes.CDLL(None, use_errno=True)


def _install_seccomp() -> bool:
    if _SECCOMP is None:
        return False
    n = len(_SECCOMP) // 8
    buf = ctypes.create_string_buffer(_SECCOMP)

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Prog(n, ctypes.addressof(buf))
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0


_NET_MARK = b"[opens1-sandbox] network not isolated\n"
_FORK_MARK = b"[opens1-sandbox] fork not blocked\n"


def _preexec(limits: SandboxLimits):
    """Runs in the child between fork and exec: namespaces, rlimits, seccomp."""

    def setup():
        os.setsid()  # own process group, so the parent can kill every descendant
        if limits.isolate_network:
            # CLONE_NEWUSER lets non-root create the net namespace; root keeps file access.
            if _LIBC.unshare(0x10000000 | 0x40000000) != 0:
                os.write(2, _NET_MARK)
        mem = limits.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_output_bytes, limits.max_output_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if limits.block_fork and not _install_seccomp():
            os.write(2, _FORK_MARK)
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # fallback; works for non-root

    return setup


def _read_capped(path: str, cap: int) -> str:
    with open(path, "rb") as f:
        return f.read(cap).decode("utf-8", "replace")


def run_python(code: str, stdin: str = "", limits: SandboxLimits = SandboxLimits()) -> RunResult:
    """Run `code` with `python -I` in a fresh temp dir under the sandbox limits."""
    work = tempfile.mkdtemp(prefix="opens1-sbx-")
    try:
        prog = os.path.join(work, "main.py")
        with open(prog, "w", encoding="utf-8") as f:
            f.write(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        out_path, err_path = os.path.join(work, ".stdout"), os.path.join(work, ".stderr")
        t0 = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", prog], stdin=subprocess.PIPE, stdout=out, stderr=err,
                cwd=work, env=env, preexec_fn=_preexec(limits), close_fds=True)
            timed_out = False
            try:
                proc.communicate(stdin.encode("utf-8"), timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:  # kill the whole group: survivors of a blocked-or-not fork, sleepers
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        wall = time.monotonic() - t0
        cap = limits.max_output_bytes
        stdout, stderr = _read_capped(out_path, cap), _read_capped(err_path, cap)
        net_ok = not limits.isolate_network or _NET_MARK.decode() not in stderr
        return RunResult(proc.returncode, stdout, stderr, timed_out, net_ok, wall)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the verifier -----------------------------------------------------------------

_FENCE_RE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

_HARNESS = '''
import sys as _s
_nonce = _s.stdin.readline().strip()
_tests = {tests!r}
_passed = 0
for _t in _tests:
    try:
        exec(_t, globals())
        _passed += 1
    except BaseException as _e:  # an assert, an error, or SystemExit from the test
        print("test failed:", _t[:80], type(_e).__name__, file=_s.stderr)
print("\\n" + _nonce, _passed, len(_tests))
'''


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


def verify_code(prediction: str | None, reference, partial: bool = False,
                limits: SandboxLimits | None = None, **opts) -> VerifyResult:
    """`reference`: test code (str), a list of test snippets, or {"io": [{"stdin", "stdout"}, ...]}."""
    limits = limits or SandboxLimits(**{k: opts[k] for k in opts if k in SandboxLimits.__dataclass_fields__})
    code = extract_code(prediction)
    if code is None:
        return VerifyResult(0.0, "no code")
    if isinstance(reference, dict) and "io" in reference:
        cases = reference["io"]
        passed, notes = 0, ""
        for case in cases:
            r = run_python(code, case.get("stdin", ""), limits)
            if r.returncode == 0 and not r.timed_out and _norm_out(r.stdout) == _norm_out(case["stdout"]):
                passed += 1
            elif r.timed_out:
                notes = " (timeout)"
        return _grade(passed, len(cases), partial, notes, r.network_isolated)
    tests = [reference] if isinstance(reference, str) else list(reference)
    if not tests:
        raise ValueError("code reference has no tests")
    nonce = secrets.token_hex(16)
    r = run_python(code + "\n\n" + _HARNESS.format(tests=tests), nonce + "\n", limits)
    m = re.search(re.escape(nonce) + r" (\d+) (\d+)\s*$", r.stdout)
    if r.timed_out:
        return VerifyResult(0.0, "wall-clock limit exceeded", code[:200])
    if m is None:
        why = f"exit {r.returncode}" + (": " + r.stderr.strip().splitlines()[-1][:120] if r.stderr.strip() else "")
        return VerifyResult(0.0, f"tests did not complete ({why})", code[:200])
    return _grade(int(m.group(1)), int(m.group(2)), partial, "", r.network_isolated)


def _grade(passed: int, total: int, partial: bool, notes: str, net_ok: bool) -> VerifyResult:
    score = passed / total if partial else float(passed == total)
    reason = f"{passed}/{total} tests passed{notes}" + ("" if net_ok else "; network not isolated")
    return VerifyResult(score, reason)
