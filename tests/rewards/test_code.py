"""The code sandbox: limits hold (loop, memory, fork, output, network) and grading is sound.

These programs are benign, so where bubblewrap is missing they run in the opt-in
unisolated mode (same limits, no namespaces but the network's); the attacks, which need
the real sandbox, are in test_code_attacks.py; the refusal without one in
test_code_refusal.py."""

import functools
import os
import uuid

import pytest

from opens1.rewards import verify as _verify
from opens1.rewards.code import SandboxLimits, isolation
from opens1.rewards.code import run_python as _run_python

UNISOLATED = isolation()[0] is None
FAST = SandboxLimits(cpu_seconds=1, wall_seconds=4.0, memory_mb=256)
run_python = functools.partial(_run_python, allow_unisolated=UNISOLATED)
verify = functools.partial(_verify, allow_unisolated=UNISOLATED)


def test_correct_and_wrong_solutions():
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    assert verify("code", good, tests).score == 1.0
    assert verify("code", bad, tests).score == 0.0
    r = verify("code", "```python\ndef add(a, b):\n    return a * b if a == 1 else a + b\n```", tests, partial=True)
    assert r.score == pytest.approx(0.5) and "1/2" in r.reason


def test_io_mode():
    prog = "```python\nn = int(input())\nprint(n * 2)\n```"
    ref = {"io": [{"stdin": "2\n", "stdout": "4"}, {"stdin": "5\n", "stdout": "10\n"}]}
    assert verify("code", prog, ref).score == 1.0
    assert verify("code", "```python\nprint(0)\n```", ref).score == 0.0


@pytest.mark.slow
def test_infinite_loop_hits_cpu_limit():
    r = run_python("while True:\n    pass\n", limits=FAST)
    assert r.returncode != 0  # SIGXCPU / SIGKILL


@pytest.mark.slow
def test_sleeping_code_hits_wall_limit():
    r = run_python("import time\ntime.sleep(60)\n", limits=SandboxLimits(cpu_seconds=1, wall_seconds=1.0))
    assert r.timed_out and r.returncode != 0


def test_memory_bomb_is_stopped():
    r = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')\n", limits=FAST)
    assert r.returncode != 0 and "allocated" not in r.stdout
    assert "MemoryError" in r.stderr


def test_fork_is_blocked():
    code = ("import os\ntry:\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    print('forked')\n"
            "except OSError as e:\n    print('blocked', e.errno)\n")
    r = run_python(code, limits=FAST)
    assert "forked" not in r.stdout and "blocked" in r.stdout, (r.stdout, r.stderr)
    r = run_python("import subprocess\nsubprocess.run(['true'])\nprint('ran')\n", limits=FAST)
    assert "ran" not in r.stdout


@pytest.mark.slow
def test_fork_bomb_does_not_escape():
    r = run_python("import os\nwhile True:\n    os.fork()\n", limits=FAST)
    assert r.returncode != 0


@pytest.mark.slow
def test_output_flood_is_capped():
    r = run_python("while True:\n    print('x' * 10000)\n", limits=SandboxLimits(cpu_seconds=2, wall_seconds=5.0,
                                                                                 max_output_bytes=100_000))
    assert r.returncode != 0 and len(r.stdout) <= 100_000


def test_network_is_isolated():
    code = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('connected')\n"
            "except OSError as e:\n    print('no network')\n")
    r = run_python(code, limits=FAST)
    if not r.network_isolated:
        pytest.skip("kernel forbids network namespaces here")
    assert "no network" in r.stdout


def test_environment_is_scrubbed_and_cwd_is_temporary():
    os.environ["OPENS1_SECRET_TEST"] = "hunter2"
    name = f"opens1-test-{uuid.uuid4().hex}.txt"
    try:
        r = run_python(f"import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nopen({name!r}, 'w').write('x')\n"
                       "print(os.path.exists(" + repr(name) + "))\n", limits=FAST)
    finally:
        del os.environ["OPENS1_SECRET_TEST"]
    assert "OPENS1_SECRET_TEST" not in r.stdout and "hunter2" not in r.stdout
    cwd, written = r.stdout.strip().splitlines()[-2:]
    assert written == "True"  # the code has a writable cwd ...
    assert not os.path.exists(os.path.join(cwd, name))  # ... gone afterwards (a private tmpfs or a deleted dir)
    if not UNISOLATED:
        assert cwd == "/tmp" and not os.path.exists(os.path.join("/tmp", name))


def test_numpy_results_arrive_as_plain_data():
    sol = ("```python\nimport numpy as np\ndef f(n):\n    return np.arange(n) * 2\n"
           "def g(x):\n    return np.float64(x) / 2\n```")
    tests = ["assert f(3) == [0, 2, 4]", "assert g(3) == 1.5", "import math\nassert math.isclose(g(1), 0.5)"]
    assert verify("code", sol, tests).score == 1.0


def test_classes_generators_exceptions_and_in_place_mutation():
    sol = ("```python\nclass Stack:\n    def __init__(self):\n        self.items = []\n"
           "    def push(self, x):\n        self.items.append(x)\n    def pop(self):\n"
           "        if not self.items:\n            raise IndexError('empty')\n        return self.items.pop()\n"
           "def evens(n):\n    for i in range(n):\n        if i % 2 == 0:\n            yield i\n"
           "def sort_in_place(xs):\n    xs.sort()\n"
           "def twice(b):\n    return b * 2, {frozenset({1}): 1.5 + 2j, None: [True, (0.1, -7 ** 80)]}\n```")
    tests = ["s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2 and s.items == [1]",
             "try:\n    Stack().pop()\n    assert False\nexcept IndexError:\n    pass",
             "assert list(evens(5)) == [0, 2, 4]",
             "g = evens(3)\nassert next(g) == 0 and next(g) == 2",
             "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
             "assert twice(b'ab') == (b'abab', {frozenset({1}): 1.5 + 2j, None: [True, (0.1, -7 ** 80)]})"]
    r = verify("code", sol, tests, partial=True)
    assert r.score == 1.0, r.reason


def test_a_big_global_table_is_reached_through_a_handle():
    sol = "```python\nTABLE = list(range(2_000_000))\ndef f(i):\n    return TABLE[i]\n```"
    tests = ["assert f(1_999_999) == 1_999_999", "assert TABLE[5] == 5 and len(TABLE) == 2_000_000"]
    r = verify("code", sol, tests, limits=SandboxLimits(cpu_seconds=5, wall_seconds=20.0))
    assert r.score == 1.0, r.reason


def test_forged_success_by_early_exit_fails():
    sneaky = "```python\nimport os\nos._exit(0)\n```"
    assert verify("code", sneaky, ["assert False"]).score == 0.0
    printer = "```python\nimport sys\nprint('OK 1 1')\nsys.exit(0)\n```"
    assert verify("code", printer, ["assert False"]).score == 0.0


def test_unclosed_think_and_no_code():
    assert verify("code", "<think>```python\nprint(1)\n```", "assert True").score == 0.0
    assert verify("code", "", "assert True").score == 0.0
