"""Attacks on the code sandbox and the code reward, each reproduced at small scale.

Every test runs hostile code that escaped or cheated the earlier sandbox (a user and
network namespace only, tests in the solution's own process) and checks that it now
holds. They need bubblewrap: without it they skip (running them unisolated would let the
code kill processes and write files on this machine). docs/sandbox.md lists what they
prove."""

from __future__ import annotations

import os
import signal
import site
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from opens1.rewards import verify
from opens1.rewards.code import SandboxLimits, isolation, run_python
from opens1.rewards.sandbox import MODE_ENV

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=8.0, memory_mb=256)


def _modes() -> list:
    """Every sandbox mode that works here: privileged bwrap (as root) and the user namespace."""
    found, why, before = [], "", os.environ.get(MODE_ENV)
    for forced in ("bwrap-root", "bwrap-userns"):
        os.environ[MODE_ENV] = forced
        mode, why = isolation()
        if mode:
            found.append(mode)
    if before is None:
        del os.environ[MODE_ENV]
    else:
        os.environ[MODE_ENV] = before
    return found or [pytest.param(None, marks=pytest.mark.skip(reason=f"needs the bubblewrap sandbox: {why}"))]


@pytest.fixture(autouse=True, params=_modes())
def mode(request, monkeypatch):
    monkeypatch.setenv(MODE_ENV, request.param)
    return request.param


@pytest.fixture
def sandbox_uid(mode):
    return SandboxLimits().uid if mode == "bwrap-root" else os.geteuid()


def _run(code: str, limits: SandboxLimits = FAST, **kw):
    return run_python(textwrap.dedent(code), limits=limits, **kw)


def _fence(code: str) -> str:
    return "```python\n" + textwrap.dedent(code) + "\n```"


# --- the filesystem -------------------------------------------------------------------------


def test_writes_outside_the_sandbox_fail(tmp_path):
    name = f"opens1-escape-{uuid.uuid4().hex}"
    import opens1

    targets = [str(Path(opens1.__file__).parent / name),  # the package source
               str(Path(site.getsitepackages()[0]) / name),  # the environment
               str(tmp_path / name),  # a test directory
               str(Path.home() / name), "/etc/" + name, "/" + name, "/dev/" + name]
    r = _run(f"""
        for p in {targets!r}:
            try:
                open(p, "w").write("owned")
                print("WROTE", p)
            except OSError as e:
                print("denied", p, type(e).__name__)
    """)
    assert r.returncode == 0, r.stderr
    assert "WROTE" not in r.stdout and r.stdout.count("denied") == len(targets)
    assert not any(os.path.exists(p) for p in targets)


def test_pth_planting_in_site_packages_fails():
    """A .pth file in site-packages runs in every later Python process: outside the sandbox."""
    marker = Path(f"/tmp/opens1-pth-ran-{uuid.uuid4().hex}")
    pth = [str(Path(d) / f"zz_opens1_evil_{uuid.uuid4().hex}.pth") for d in site.getsitepackages()]
    r = _run(f"""
        for p in {pth!r}:
            try:
                open(p, "w").write("import os; open({str(marker)!r}, 'w').write('ran')\\n")
                print("PLANTED", p)
            except OSError as e:
                print("denied", type(e).__name__, e.errno)
    """)
    assert "PLANTED" not in r.stdout and "denied" in r.stdout, (r.stdout, r.stderr)
    assert not any(os.path.exists(p) for p in pth)
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # a later interpreter on the host
    assert not marker.exists()


def test_owner_only_files_and_the_callers_environment_are_out_of_reach(tmp_path, sandbox_uid, monkeypatch):
    secret = tmp_path / "secret.key"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    monkeypatch.setenv("OPENS1_TEST_API_KEY", "sk-live-0123456789")
    r = _run(f"""
        import os
        for p in [{str(secret)!r}, "/etc/shadow", "/root/.bash_history"]:
            try:
                print("GOT", p, open(p).read()[:20])
            except OSError as e:
                print("denied", p, type(e).__name__)
        for pid in os.listdir("/proc"):  # every process the code can see, and their environments
            if pid.isdigit():
                try:
                    print(pid, open(f"/proc/{{pid}}/environ", "rb").read())
                except OSError as e:
                    print(pid, type(e).__name__)
        print("uid", os.getuid())
    """)
    assert "GOT" not in r.stdout and r.stdout.count("denied") == 3, r.stdout
    assert "hunter2" not in r.stdout and "sk-live" not in r.stdout, r.stdout
    assert f"uid {sandbox_uid}" in r.stdout


def test_owner_only_file_inside_the_view_is_unreadable_to_the_sandbox_uid(tmp_path, mode):
    """Even a file the sandbox can see (a bound data directory) is protected by the uid switch."""
    if mode != "bwrap-root":
        pytest.skip("the code runs as a separate uid only when the caller is root")
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    (data / "public.txt").write_text("shared")
    (data / "public.txt").chmod(0o644)
    (data / "private.txt").write_text("hunter2")
    (data / "private.txt").chmod(0o600)
    r = _run(f"""
        for n in ("public.txt", "private.txt"):
            try:
                print(n, open({str(data)!r} + "/" + n).read())
            except PermissionError:
                print(n, "denied")
    """, read_only_paths=(str(data),))
    assert "public.txt shared" in r.stdout and "private.txt denied" in r.stdout, (r.stdout, r.stderr)


def test_disk_fill_with_many_files_stops_at_the_sandbox_quota():
    lim = SandboxLimits(cpu_seconds=5, wall_seconds=20.0, memory_mb=256, disk_mb=4)
    r = _run("""
        import errno, os
        n = 0
        try:
            for i in range(100_000):  # 100 KB each: 10 GB if nothing stopped it
                with open(f"f{i}", "wb") as f:
                    f.write(b"x" * 100_000)
                n += 1
        except OSError as e:
            print("stopped", errno.errorcode[e.errno], n)
    """, limits=lim)
    assert "stopped ENOSPC" in r.stdout, (r.stdout, r.stderr)
    assert int(r.stdout.split()[-1]) * 100_000 <= 4 << 20


def test_many_empty_files_stop_at_the_file_quota(mode):
    """Empty files cost no tmpfs bytes but ~1 KB of kernel memory each."""
    if mode != "bwrap-root":
        pytest.skip("the file-count cap needs the privileged mode's own tmpfs mounts (bwrap sets a size only)")
    lim = SandboxLimits(cpu_seconds=5, wall_seconds=20.0, memory_mb=256, max_files=500)
    r = _run("""
        import errno, os
        n = 0
        try:
            for i in range(1_000_000):
                os.close(os.open(f"e{i}", os.O_CREAT | os.O_WRONLY))
                n += 1
        except OSError as e:
            print("stopped", errno.errorcode[e.errno], n)
    """, limits=lim)
    assert "stopped ENOSPC" in r.stdout and int(r.stdout.split()[-1]) < 500, (r.stdout, r.stderr)


def test_dev_shm_fill_stops_at_its_own_quota():
    lim = SandboxLimits(cpu_seconds=5, wall_seconds=20.0, memory_mb=256, shm_mb=2)
    r = _run("""
        import errno
        n = 0
        try:
            for i in range(10_000):  # 1 GB if nothing stopped it; RLIMIT_AS does not see tmpfs pages
                with open(f"/dev/shm/x{i}", "wb") as f:
                    f.write(b"x" * 100_000)
                n += 1
        except OSError as e:
            print("stopped", errno.errorcode[e.errno], n)
    """, limits=lim)
    assert "stopped ENOSPC" in r.stdout, (r.stdout, r.stderr)
    assert int(r.stdout.split()[-1]) * 100_000 <= 2 << 20


# --- processes -----------------------------------------------------------------------------


def test_killing_the_parent_or_any_process_fails(sandbox_uid):
    """os.kill of the parent (the RL trainer scores in-process), of a process with the
    sandbox's own uid, of the whole process group and of every process (-1)."""
    sleeper = subprocess.Popen(["sleep", "60"],
                               user=sandbox_uid if os.geteuid() == 0 else None)
    try:
        r = _run(f"""
            import os, signal
            for pid in (os.getppid(), {os.getpid()}, {sleeper.pid}, -1, 0):  # 0: itself, last
                try:
                    os.kill(pid, signal.SIGKILL)
                    print("sent", pid, flush=True)
                except OSError as e:
                    print("failed", pid, type(e).__name__, flush=True)
        """)
        time.sleep(0.2)
        assert sleeper.poll() is None  # the same-uid process lives
        os.kill(os.getpid(), 0)  # and so do we
        # in its PID namespace the code's parent is the sandbox's init, not this process
        assert f"failed {os.getpid()}" in r.stdout and f"failed {sleeper.pid}" in r.stdout, r.stdout
    finally:
        sleeper.kill()
        sleeper.wait()


def test_fork_bomb_and_threads_are_denied():
    r = _run("""
        import os, threading
        out = []
        try:
            os.fork()
            out.append("forked")
        except OSError as e:
            out.append("fork denied")
        try:
            threading.Thread(target=print).start()
            out.append("thread")
        except RuntimeError:
            out.append("thread denied")
        print(*out)
        while True:
            os.fork()
    """)
    assert "fork denied" in r.stdout and "thread denied" in r.stdout, (r.stdout, r.stderr)
    assert r.returncode != 0  # the bomb's first fork raised


def test_network_is_unreachable_even_on_loopback():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    try:
        r = _run(f"""
            import socket
            for host, port in (("1.1.1.1", 80), ("127.0.0.1", {port})):
                try:
                    socket.create_connection((host, port), timeout=2)
                    print("CONNECTED", host)
                except OSError as e:
                    print("no network", host, type(e).__name__)
        """)
        with pytest.raises(socket.timeout):
            srv.accept()  # nothing reached the host's loopback
    finally:
        srv.close()
    assert "CONNECTED" not in r.stdout and r.stdout.count("no network") == 2 and r.network_isolated


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_timed_out_sandboxes_leave_no_process_not_even_a_zombie():
    """A wall-clock kill ends every process of both sandboxes and each is reaped: none is
    left to PID 1 (which, in a container, may never reap it)."""
    import threading

    from opens1.rewards.code import verify_code

    seen: set[int] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(_descendants(os.getpid()))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = verify_code(_fence("import time\ntime.sleep(60)"), ["assert True"],
                        limits=SandboxLimits(cpu_seconds=2, wall_seconds=1.5))
    finally:
        done.set()
        watcher.join()
    assert r.reason == "wall-clock limit exceeded"
    assert len(seen) >= 6  # two sandboxes: bwrap, its init, the worker
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in seen):
        time.sleep(0.1)
    assert not [p for p in seen if os.path.exists(f"/proc/{p}")]


@pytest.mark.slow
def test_killed_verifier_leaves_no_process_and_no_files(tmp_path):
    """SIGKILL the process that runs the sandbox (an RL trainer killed by the OOM killer):
    the sandboxed code dies with it and no temporary file or directory remains."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", "from opens1.rewards.code import verify_code as v, SandboxLimits as L\n"
         "v('```python\\nimport time\\ntime.sleep(60)\\n```', ['assert True'], limits=L(wall_seconds=60))"],
        env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while time.monotonic() < deadline and len(pids) < 6:  # 2 sandboxes: bwrap, its init, python
            time.sleep(0.2)
            pids = _descendants(child.pid)
        assert len(pids) >= 6, "the sandboxes did not start"
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
    assert list(tmp.iterdir()) == []


# --- reward hacking --------------------------------------------------------------------------

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def test_honest_solutions_still_score():
    assert verify("code", _fence("def add(a, b):\n    return a + b"), ADD_TESTS).score == 1.0
    assert verify("code", _fence("def add(a, b):\n    return a - b"), ADD_TESTS).score == 0.0
    r = verify("code", _fence("def add(a, b):\n    return 4 if a == 2 else 5"), ADD_TESTS, partial=True)
    assert r.score == pytest.approx(1 / 3)


@pytest.mark.parametrize("name,hack", [
    # the two hacks that scored 1.0 against the in-process harness
    ("replace exec in the harness's globals", "def add(a, b):\n    return 0\nexec = lambda *a, **k: None"),
    ("read the nonce from stdin and print the success line",
     "import sys\nnonce = sys.stdin.readline().strip()\nprint('\\n' + nonce, 3, 3)\nsys.exit(0)\n"
     "def add(a, b):\n    return 0"),
    # more of the same family
    ("an object equal to everything",
     "class Eq:\n    def __eq__(self, o):\n        return True\n    __hash__ = None\n"
     "def add(a, b):\n    return Eq()"),
    ("an int subclass equal to everything",
     "class Eq(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
     "def add(a, b):\n    return Eq(0)"),
    ("patch AssertionError and the builtins",
     "import builtins\nbuiltins.AssertionError = type('A', (BaseException,), {})\n"
     "builtins.__build_class__ = None\ndef add(a, b):\n    return 0"),
    ("shadow a builtin the tests use", "def len(x):\n    return 3\ndef add(a, b):\n    return 0"),
    ("exit 0 before the tests", "import os\nos._exit(0)"),
    ("write a verdict on every file descriptor",
     "import os, json\nfor fd in range(3, 256):\n    try:\n"
     "        os.write(fd, json.dumps({'passed': 3, 'total': 3, 'failures': []}).encode())\n"
     "    except OSError:\n        pass\ndef add(a, b):\n    return 0"),
    ("monkeypatch a module the tests import",
     "import math\nmath.isclose = lambda *a, **k: True\ndef add(a, b):\n    return 0"),
    ("end the tests' loops early with StopIteration", "def add(a, b):\n    raise StopIteration"),
])
def test_reward_hacks_score_zero(name, hack):
    tests = ADD_TESTS + ["import math\nassert math.isclose(add(0.1, 0.2), 0.3)",
                         "assert all(map(lambda p: add(*p) == p[0] + p[1], [(1, 2), (3, 4)]))",
                         "assert len([add(1, 1)]) == 1"]
    r = verify("code", _fence(hack), tests, partial=True)
    assert r.score < 0.5, (name, r)
    assert verify("code", _fence(hack), tests).score == 0.0, name
