"""The code sandbox: limits hold (loop, memory, fork, output, network) and grading is sound."""

import os

import pytest

from opens1.rewards import verify
from opens1.rewards.code import SandboxLimits, run_python

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=4.0, memory_mb=256)


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
    try:
        r = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nopen('f.txt', 'w').write('x')\n",
                       limits=FAST)
    finally:
        del os.environ["OPENS1_SECRET_TEST"]
    assert "OPENS1_SECRET_TEST" not in r.stdout and "hunter2" not in r.stdout
    cwd = r.stdout.strip().splitlines()[-1]
    assert "opens1-sbx-" in cwd and not os.path.exists(cwd)  # deleted afterwards


def test_forged_success_by_early_exit_fails():
    sneaky = "```python\nimport os\nos._exit(0)\n```"
    assert verify("code", sneaky, ["assert False"]).score == 0.0
    printer = "```python\nimport sys\nprint('OK 1 1')\nsys.exit(0)\n```"
    assert verify("code", printer, ["assert False"]).score == 0.0


def test_unclosed_think_and_no_code():
    assert verify("code", "<think>```python\nprint(1)\n```", "assert True").score == 0.0
    assert verify("code", "", "assert True").score == 0.0
