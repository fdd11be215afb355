"""The operations scripts (scripts/*.sh) as operators run them, on a redis-server of their own, with
the fake servers as endpoints; and what a test reads of what they leave (pid files, live processes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import REDIS_URL, ROOT, clean_redis, dual_env
from fakes.server_process import FakeServerProcess
from rig import PrivateRedis

SCRIPTS = ROOT / "scripts"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def script(
    name: str, *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / name), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def pid_of(run_dir: Path, name: str) -> int:
    return int((run_dir / f"{name}.pid").read_text().splitlines()[0])


@pytest.fixture(scope="module", name="scripts_redis_url")
def scripts_redis_url_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        yield REDIS_URL.rsplit("/", 1)[0] + "/12"
        return
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start(timeout=30)
    try:
        yield server.url
    finally:
        server.stop(timeout=30)


@pytest.fixture(name="scripts_redis")
def scripts_redis_fixture(scripts_redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(scripts_redis_url)
    clean_redis(client)
    yield scripts_redis_url
    clean_redis(client)
    client.close()


@pytest.fixture(name="ops_env")
def ops_env_fixture(
    tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess, scripts_redis: str
) -> Iterator[dict[str, str]]:
    server_a.reset()
    server_b.reset()
    env = dual_env(
        server_a,
        server_b,
        CELERY_BROKER_URL=scripts_redis,
        CELERY_RESULT_BACKEND=scripts_redis,
        MAIE_RUN_DIR=str(tmp_path / "run"),
        LOG_DIR=str(tmp_path / "logs"),
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    yield env
    # Whatever a failed test left running: stop it the way operators do, then make sure.
    run_dir = tmp_path / "run"
    if run_dir.is_dir() and any(run_dir.glob("*.pid")):
        pids = [pid_of(run_dir, p.stem) for p in run_dir.glob("*.pid")]
        script("kill_maie.sh", "--timeout", "20", env=env, timeout=120)
        for pid in pids:
            if alive(pid) and "maie" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
