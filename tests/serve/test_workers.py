"""The worker pool: jobs run in other processes with the pool's context, their errors come
back as themselves, the pool is bounded, and a worker that dies fails its own job only
(the pool is rebuilt and serves the next one). Threads (processes=0) behave the same."""

import asyncio
import os

import pytest

from opens1.serve.workers import Busy, WorkerDied, Workers

pytestmark = pytest.mark.timeout(120)


def describe(context, x):
    return {"pid": os.getpid(), "context": context, "x": x}


def fail(_context, message):
    raise ValueError(message)


def die(_context):
    os._exit(3)  # as the OOM killer would: no exception, no cleanup


def wait_for(_context, path):
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return "released"


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("processes", [0, 1])
def test_jobs_get_the_context_and_raise_their_own_errors(processes):
    pool = Workers("t", processes=processes, context={"tok": "ctx"})
    try:
        out = run(pool.run(describe, 7))
        assert out["context"] == {"tok": "ctx"} and out["x"] == 7
        assert (out["pid"] != os.getpid()) == bool(processes)
        with pytest.raises(ValueError, match="bad input"):
            run(pool.run(fail, "bad input"))
        assert run(pool.run(describe, 8))["x"] == 8
    finally:
        pool.close()


def test_a_dead_worker_fails_its_job_only():
    pool = Workers("t", processes=1, context=None)
    try:
        first = run(pool.run(describe, 1))["pid"]
        with pytest.raises(WorkerDied):
            run(pool.run(die))
        again = run(pool.run(describe, 2))  # a new pool, a new worker
        assert again["x"] == 2 and again["pid"] != first
    finally:
        pool.close()


@pytest.mark.parametrize("processes", [0, 1])
def test_the_pool_is_bounded(processes, tmp_path):
    gate = str(tmp_path / "go")
    pool = Workers("t", processes=processes, max_pending=2)

    async def scenario():
        held = [asyncio.create_task(pool.run(wait_for, gate)) for _ in range(2)]
        while pool.pending < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(Busy):
            await pool.run(describe, 0)
        open(gate, "w").close()
        return await asyncio.gather(*held)

    try:
        assert run(scenario()) == ["released", "released"]
        assert pool.pending == 0
        assert run(pool.run(describe, 3))["x"] == 3
    finally:
        pool.close()


def test_close_then_reuse():
    pool = Workers("t", processes=0)
    assert run(pool.run(describe, 1))["x"] == 1
    pool.close()
    assert run(pool.run(describe, 2))["x"] == 2  # restarts on demand
    pool.close()


def test_workers_exit_when_the_server_process_dies(tmp_path):
    # a server killed without closing its pools (as `kill -9`) must not leave its workers behind
    import subprocess
    import sys
    import time

    script = tmp_path / "server.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from opens1.serve.workers import Workers\n"
        "def pid(_c):\n    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    w = Workers('t', processes=1)\n"
        "    print(asyncio.run(w.run(pid)), flush=True)\n"
        "    os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    worker = int(out.stdout.split()[0])
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{worker}"):
        time.sleep(0.1)
    alive = os.path.exists(f"/proc/{worker}")
    if alive:
        os.kill(worker, 9)
    assert not alive
