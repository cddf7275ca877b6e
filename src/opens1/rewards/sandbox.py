"""The code sandbox: bubblewrap (bwrap) namespaces around a Python process with hard limits.

docs/sandbox.md states the threat model; tests/rewards/test_code_attacks.py reproduces each
attack. One sandbox is one `bwrap` process tree:

- namespaces: PID (the code sees only itself; no other process can be named, let alone
  killed), mount, IPC, UTS, cgroup and network (nothing but a down loopback);
- filesystem: a read-only view of the system (/usr, the Python installation and a few
  files of /etc) and nothing else: no home, no project, no /work; the writable places are a
  private tmpfs at /tmp (`disk_mb`) and one at /dev/shm (`shm_mb`), both gone with the
  sandbox, so a killed run leaves nothing on disk;
- identity: where the caller is root, bwrap runs privileged and the code runs as
  `uid`:`gid` (nobody) with no capabilities; otherwise bwrap makes a user namespace and
  the code keeps the caller's uid, with nested user namespaces disabled;
- limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE and a seccomp filter that
  denies process creation and the syscalls that could undo the isolation, all set by
  sandbox_worker.py before any untrusted code runs; a wall clock kills the tree.

Without a working bwrap the sandbox refuses to run code (SandboxUnavailable), unless the
caller opts in to the unisolated fallback (OPENS1_ALLOW_UNISOLATED_CODE=1 or
`allow_unisolated=True`): the same limits and seccomp filter, a network namespace, but the
caller's filesystem and uid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

WORKER = Path(__file__).with_name("sandbox_worker.py")
PROTOCOL = Path(__file__).with_name("sandbox_protocol.py")


def _trusted_files() -> dict[str, bytes]:
    """The worker and the wire protocol it imports, at their places in the sandbox."""
    return {"/sbx/worker.py": WORKER.read_bytes(), "/sbx/sandbox_protocol.py": PROTOCOL.read_bytes()}
UNISOLATED_ENV = "OPENS1_ALLOW_UNISOLATED_CODE"
BWRAP_ENV = "OPENS1_BWRAP"  # path of the bwrap binary; empty: behave as if none is installed
MODE_ENV = "OPENS1_SANDBOX_MODE"  # "bwrap-userns": no privileged bwrap even as root


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512  # RLIMIT_AS per process
    max_output_bytes: int = 1 << 20  # per stream and per file written; RLIMIT_FSIZE
    max_open_files: int = 64
    disk_mb: int = 64  # private tmpfs at /tmp (the cwd and HOME)
    shm_mb: int = 8  # private tmpfs at /dev/shm
    max_files: int = 10_000  # files and directories in each of the two
    block_fork: bool = True  # seccomp: no fork, clone or threads
    isolate_network: bool = True
    uid: int = 65534  # the code's uid/gid when the caller is root
    gid: int = 65534


@dataclass(frozen=True)
class RunResult:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool  # wall-clock limit hit
    network_isolated: bool
    wall_seconds: float
    isolation: str = "bwrap"  # "bwrap-root", "bwrap-userns" or "unisolated"


class SandboxUnavailable(RuntimeError):
    """No isolation tool works here and the caller did not opt in to running without one."""


# --- which isolation works here ------------------------------------------------------------


def _bwrap_path() -> str | None:
    if BWRAP_ENV in os.environ:
        p = os.environ[BWRAP_ENV]
        return p if p and os.access(p, os.X_OK) else None
    return shutil.which("bwrap")


@lru_cache(maxsize=None)
def _probe(bwrap: str | None, forced: str) -> tuple[str | None, str]:
    """(mode, why): the first bwrap mode whose probe sandbox starts and reports the
    expected uid, or (None, what went wrong)."""
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed"
    modes = (["bwrap-root"] if os.geteuid() == 0 else []) + ["bwrap-userns"]
    if forced:
        if forced not in ("bwrap-root", "bwrap-userns"):
            return None, f"{MODE_ENV}={forced!r} is not bwrap-root or bwrap-userns"
        modes = [forced]
    why = []
    for mode in modes:
        lim = SandboxLimits()
        argv, fds = _bwrap_argv(bwrap, mode, lim, {"mode": "probe"}, {})
        try:
            p = subprocess.run(argv, pass_fds=fds, capture_output=True, timeout=30, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as e:
            why.append(f"{mode}: {e}")
            continue
        finally:
            for fd in fds:
                os.close(fd)
        want = lim.uid if mode == "bwrap-root" else os.geteuid()
        try:
            info = json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            info = {}
        if p.returncode == 0 and info.get("uid") == want and info.get("pid", 0) <= 3:
            return mode, ""
        why.append(f"{mode}: exit {p.returncode}: {p.stderr.decode(errors='replace').strip()[-300:]}")
    return None, "bwrap is installed but no sandbox could start (" + "; ".join(why) + ")"


def isolation() -> tuple[str | None, str]:
    """("bwrap-root" | "bwrap-userns" | None, reason when None) for this machine."""
    return _probe(_bwrap_path(), os.environ.get(MODE_ENV, ""))


def _resolve(allow_unisolated: bool) -> str:
    mode, why = isolation()
    if mode:
        return mode
    if allow_unisolated or os.environ.get(UNISOLATED_ENV) == "1":
        return "unisolated"
    raise SandboxUnavailable(
        f"refusing to run model-written code: {why}. Install bubblewrap (Debian/Ubuntu: apt-get install "
        f"bubblewrap) for a sandbox with its own PID, mount and network namespaces, or accept running it "
        f"with resource limits, seccomp and a network namespace only (it can then read and write what your "
        f"user can, and signal your processes) by setting {UNISOLATED_ENV}=1 or passing allow_unisolated=True.")


# --- bwrap command line ---------------------------------------------------------------------


def _memfd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name)  # close-on-exec: only the sandbox it is passed to gets it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _python_dirs() -> list[str]:
    """Directories the interpreter needs that /usr does not already cover."""
    dirs = {sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix,
            str(Path(os.path.realpath(sys.executable)).parent.parent), *site.getsitepackages()}
    out = []
    for d in sorted(dirs):
        d = os.path.realpath(d)
        if os.path.isdir(d) and not d.startswith("/usr/") and not any(d.startswith(o + "/") for o in out):
            out.append(d)
    return out


_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "passwd", "group", "nsswitch.conf")


def _ro_binds(paths: list[str]) -> list[str]:
    a, made = [], set()
    for d in paths:
        for parent in reversed(Path(d).parents[:-1]):  # traversable by the sandbox uid (/root is 0700)
            if parent not in made:
                made.add(parent)
                a += ["--perms", "0755", "--dir", str(parent)]
        a += ["--ro-bind", d, d]
    return a


def _bwrap_argv(bwrap: str, mode: str, lim: SandboxLimits, cfg: dict, files: dict[str, bytes], *,
                read_only: tuple[str, ...] = ()) -> tuple[list[str], list[int]]:
    """The bwrap command for one sandbox and the fds it must inherit. `files`: path in
    the sandbox -> contents, placed read-only under /sbx; `read_only`: host paths shown
    read-only at the same place."""
    a = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
         "--unshare-cgroup-try"]
    if lim.isolate_network:
        a.append("--unshare-net")
    cfg = {**cfg, "sandboxed": True}
    if mode == "bwrap-root":
        # privileged bwrap; the worker's prologue mounts the file-capped tmpfs (CAP_SYS_ADMIN;
        # bwrap sets a size only), empties the bounding set (CAP_SETPCAP), switches to the
        # sandbox uid (CAP_SETUID/SETGID) and gives up all four before any code runs
        a += ["--cap-drop", "ALL"] + [x for c in ("CAP_SYS_ADMIN", "CAP_SETPCAP", "CAP_SETUID", "CAP_SETGID")
                                      for x in ("--cap-add", c)]
        cfg.update(drop=[lim.uid, lim.gid], mounts=[["/tmp", lim.disk_mb << 20, lim.max_files],
                                                    ["/dev/shm", lim.shm_mb << 20, lim.max_files]])
    else:  # unprivileged: the caller's uid in a user namespace, no capabilities, no nested namespaces
        a += ["--unshare-user", "--disable-userns"]
    a += ["--perms", "0755", "--dir", "/sbx", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = "/" + top
        if os.path.islink(p):
            a += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            a += ["--ro-bind", p, p]
    for name in _ETC:
        a += ["--ro-bind-try", "/etc/" + name, "/etc/" + name]
    a += _ro_binds(_python_dirs())
    a += ["--proc", "/proc", "--dev", "/dev",
          "--perms", "1777", "--size", str(lim.shm_mb << 20), "--tmpfs", "/dev/shm",
          "--perms", "1777", "--size", str(lim.disk_mb << 20), "--tmpfs", "/tmp"]
    read_only = [os.path.realpath(p) for p in read_only]
    if mode == "bwrap-root":  # the worker's tmpfs mounts would cover them: it binds them after
        for i, p in enumerate(read_only):
            a += ["--ro-bind", p, f"/sbx/ro/{i}"]
        cfg["binds"] = [[f"/sbx/ro/{i}", p] for i, p in enumerate(read_only)]
    else:
        a += _ro_binds(read_only)  # after /tmp: they may live there
    fds = []
    for dest, data in {**_trusted_files(), **files}.items():
        fd = _memfd(data, "opens1-sbx")
        fds.append(fd)
        a += ["--perms", "0444", "--ro-bind-data", str(fd), dest]
    a += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for k, v in _env("/tmp").items():
        a += ["--setenv", k, v]
    cfg = {**cfg, "limits": asdict(lim), "require_seccomp": True}
    a += ["--", sys.executable, "-I", "-B", "-S", "/sbx/worker.py", json.dumps(cfg)]
    return a, fds


def _env(home: str) -> dict[str, str]:
    # one thread per library: thread creation is denied by seccomp
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# --- running one sandbox ---------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Sandbox:
    """One running sandbox: `python -I -B -S worker.py` in mode cfg["mode"], started now.

    stdin is a snapshot (a memfd), stdout/stderr go to unlinked temporary files (nothing
    remains on disk however the run ends); `kill()` ends the whole tree."""

    def __init__(self, mode: str, lim: SandboxLimits, cfg: dict, files: dict[str, bytes], *, stdin: bytes = b"",
                 pass_fds: tuple[int, ...] = (), read_only: tuple[str, ...] = ()):
        self.mode, self.lim = mode, lim
        self.out = tempfile.TemporaryFile(prefix="opens1-sbx-")
        self.err = tempfile.TemporaryFile(prefix="opens1-sbx-")
        self.work = None
        fin = _memfd(stdin, "opens1-sbx-stdin")
        fds: list[int] = []
        try:
            if mode == "unisolated":
                argv, cwd, env = self._unisolated(cfg, files)
            else:
                argv, fds = _bwrap_argv(_bwrap_path(), mode, lim, cfg, files, read_only=read_only)
                cwd, env = "/", {}
            self.proc = subprocess.Popen(argv, stdin=fin, stdout=self.out, stderr=self.err, cwd=cwd, env=env,
                                         pass_fds=tuple(fds) + tuple(pass_fds), start_new_session=True)
        except BaseException:
            self._cleanup()
            raise
        finally:
            os.close(fin)
            for fd in fds:
                os.close(fd)

    def _unisolated(self, cfg: dict, files: dict[str, bytes]):
        """The opt-in fallback: a fresh temporary directory holds the files and is the cwd."""
        self.work = tempfile.mkdtemp(prefix="opens1-sbx-")
        paths = {}
        for dest, data in {**_trusted_files(), **files}.items():
            p = os.path.join(self.work, os.path.basename(dest))
            with open(p, "wb") as f:
                f.write(data)
            paths[dest] = p
        cfg = {k: (paths.get(v, v) if isinstance(v, str) else v) for k, v in cfg.items()}
        cfg.update(limits=asdict(self.lim), unshare_net=self.lim.isolate_network, require_seccomp=False)
        argv = [sys.executable, "-I", "-B", "-S", paths["/sbx/worker.py"], json.dumps(cfg)]
        return argv, self.work, _env(self.work)

    def wait(self, deadline: float) -> bool:
        """Wait until the process exits or `deadline` (time.monotonic()); True if it exited."""
        try:
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0))
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        """End the sandbox from the inside out: bwrap's child (the PID namespace's init,
        whose death takes every process in the namespace with it) first; bwrap then reaps
        it and exits. Killing bwrap first would leave its child to PID 1, which in a
        container may never reap it. In the unisolated mode the process group is all."""
        if self.proc.poll() is None and self.mode != "unisolated":
            for pid in _children(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()

    def read(self, f) -> str:
        f.seek(0)
        return f.read(self.lim.max_output_bytes).decode("utf-8", "replace")

    def _cleanup(self) -> None:
        self.out.close()
        self.err.close()
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    def result(self, *, timed_out: bool, wall: float) -> RunResult:
        try:
            stdout, stderr = self.read(self.out), self.read(self.err)
        finally:
            self._cleanup()
        net = not self.lim.isolate_network or "[opens1-sandbox] network not isolated" not in stderr
        return RunResult(self.proc.returncode, stdout, stderr, timed_out, net, wall, self.mode)


def run_python(code: str, stdin: str = "", limits: SandboxLimits = SandboxLimits(), *,
               allow_unisolated: bool = False, read_only_paths: tuple[str, ...] = ()) -> RunResult:
    """Run `code` as a script (`python -I -B`) in a fresh sandbox; raises SandboxUnavailable
    when no isolation works here and the caller did not opt in (see the module docstring).
    `read_only_paths`: host files or directories the code may read (e.g. a task's data)."""
    mode = _resolve(allow_unisolated)
    t0 = time.monotonic()
    sb = Sandbox(mode, limits, {"mode": "run", "main": "/sbx/main.py"}, {"/sbx/main.py": code.encode("utf-8")},
                 stdin=stdin.encode("utf-8"), read_only=tuple(read_only_paths))
    exited = sb.wait(t0 + limits.wall_seconds)
    sb.kill()
    return sb.result(timed_out=not exited, wall=time.monotonic() - t0)
