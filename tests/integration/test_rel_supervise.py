"""Supervised pools: `scripts/start-worker.sh --detach` keeps a pool running through what kills it.

A pool's worker that dies (SIGKILL, or Celery's "Unrecoverable error" after a broker crash) is
restarted by its supervisor with backoff; `scripts/kill_maie.sh` still stops it for good. The pools
run exactly as operators start them, against a redis-server of the test's own with persistence on
(`appendonly yes`), which the last test SIGKILLs three times with tasks in flight.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.server_process import FakeServerProcess
from helpers import assert_complete_once, in_flight, n_chunks, transcript, wait_for
from ops import alive, pid_of, script
from rig import PrivateRedis, release_clients

from maie import submit
from maie.settings import Settings, load_settings

RESTARTED = re.compile(r"supervise worker-(\w+): exited unexpectedly \(([^)]*\)?)\) after")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def worker_pid(run_dir: Path, pool: str) -> int | None:
    """The Celery worker under the pool's supervisor (the pid file holds the supervisor's pid)."""
    kids = children(pid_of(run_dir, f"worker-{pool}"))
    return kids[0] if kids else None


class Pools:
    def __init__(self, env: dict[str, str], run_dir: Path, log_dir: Path) -> None:
        self.env = env
        self.run_dir = run_dir
        self.log_dir = log_dir

    def start(self, *pools: str) -> None:
        for pool in pools:
            proc = script("start-worker.sh", pool, "--detach", env=self.env)
            assert proc.returncode == 0, proc.stdout + proc.stderr

    def output(self, pool: str) -> str:
        path = self.log_dir / f"worker-{pool}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def restarts(self) -> list[tuple[str, str]]:
        return [
            (m.group(1), m.group(2))
            for pool in ("enhance", "summary")
            for m in RESTARTED.finditer(self.output(pool))
        ]

    def stop(self) -> str:
        proc = script("kill_maie.sh", "--timeout", "30", env=self.env, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    release_clients(server.url)
    server.close()


@pytest.fixture
def pools(
    tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess, private_redis: PrivateRedis
) -> Iterator[Pools]:
    from conftest import dual_env

    server_a.reset()
    server_b.reset()
    env = dual_env(
        server_a,
        server_b,
        CELERY_BROKER_URL=private_redis.url,
        CELERY_RESULT_BACKEND=private_redis.url,
        MAIE_RUN_DIR=str(tmp_path / "run"),
        LOG_DIR=str(tmp_path / "logs"),
        WORKER_CONCURRENCY="4",
        BROKER_VISIBILITY_TIMEOUT="5",
        MAIE_RESTART_BACKOFF_MIN="1",
        MAIE_RESTART_BACKOFF_MAX="4",
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    p = Pools(env, tmp_path / "run", tmp_path / "logs")
    yield p
    server_a.reset()  # wakes delayed requests
    if any(p.run_dir.glob("*.pid")):
        p.stop()


def settings_for(redis_server: PrivateRedis, **overrides: Any) -> Settings:
    url = redis_server.url
    return load_settings(env_file=None, celery_broker_url=url, celery_result_backend=url, **overrides)


def test_a_killed_worker_is_restarted_and_kill_maie_stops_the_pool_for_good(
    pools: Pools, private_redis: PrivateRedis
) -> None:
    pools.start("enhance", "summary")
    supervisor = pid_of(pools.run_dir, "worker-enhance")
    first = wait_for("the enhance worker", lambda: worker_pid(pools.run_dir, "enhance"), 30)
    os.kill(first, signal.SIGKILL)
    # The supervisor notices, waits its backoff and starts a new worker, which becomes ready.
    second = wait_for(
        "a new enhance worker",
        lambda: (w := worker_pid(pools.run_dir, "enhance")) not in (None, first) and w,
        60,
    )
    wait_for("the new worker to be ready", lambda: pools.output("enhance").count(" ready.") == 2, 120)
    assert pid_of(pools.run_dir, "worker-enhance") == supervisor and alive(supervisor)
    assert pools.restarts() == [("enhance", "signal 9 (KILL)")]
    # The restarted pool does the work.
    source = transcript(6)
    job = submit(source, settings=settings_for(private_redis, chunk_max_tokens=40))
    assert_complete_once(job.wait(timeout=120), source, n_chunks(job))
    # kill_maie.sh: warm shutdown through the supervisor, and nothing comes back.
    report = pools.stop()
    assert f"worker-enhance: stopped (pid {supervisor})" in report
    assert not alive(supervisor) and not alive(second)
    time.sleep(3)  # longer than the backoff: a restart would have happened by now
    assert pools.restarts() == [("enhance", "signal 9 (KILL)")]
    assert "exited unexpectedly" not in pools.output("enhance").split(" ready.")[-1]
    assert list(pools.run_dir.glob("*.pid")) == []


def test_redis_killed_three_times_with_tasks_in_flight_loses_no_job(
    pools: Pools, private_redis: PrivateRedis, server_a: FakeServerProcess
) -> None:
    pools.start("enhance", "summary")
    supervisors = {p: pid_of(pools.run_dir, f"worker-{p}") for p in ("enhance", "summary")}
    # Enough work that chunks are in flight at each of the three kills: about 80 chunks of 1.5 s
    # each on 4 threads, against three kills about 5 s apart.
    server_a.faults([{"kind": "delay", "seconds": 1.5}])
    settings = settings_for(private_redis, chunk_max_tokens=40)
    sources = [transcript(16, {i: f"marker{i}"}) for i in range(10)]
    jobs = [submit(s, settings=settings) for s in sources]
    for kill in range(3):
        wait_for(f"chunks in flight before kill {kill + 1}", lambda: in_flight(server_a), 60)
        private_redis.stop(signal.SIGKILL)
        time.sleep(2)
        private_redis.start()
        time.sleep(3)  # let the workers reconnect and take tasks again
    for job, source in zip(jobs, sources, strict=True):
        result = job.wait(timeout=240)
        assert_complete_once(result, source, n_chunks(job))
    # Every pool is still there: its worker reconnected, or its supervisor restarted it.
    for pool, pid in supervisors.items():
        assert alive(pid), f"the {pool} pool's supervisor is gone:\n{pools.output(pool)[-3000:]}"
        assert worker_pid(pools.run_dir, pool) is not None
    # kombu's closed-channel bug (maie.broker.guard_closed_redis_channels) no longer stops a worker;
    # any other restart is the supervisor doing its job.
    for pool in supervisors:
        assert "object has no attribute 'hostname'" not in pools.output(pool)
    new_job = submit(transcript(3), settings=settings)
    assert new_job.wait(timeout=120).status == "SUCCESS"
