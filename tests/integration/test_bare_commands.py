"""The README's bare commands, run as printed: `celery -A maie worker -Q enhance` and `-Q summary`
are two workers, `celery -A maie flower` refuses unauthenticated requests (its auth read from MAIE's
settings: the environment or `.env`), and scripts/start-flower.sh reads `.env` like the rest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import ROOT, base_env, clean_redis
from fakes.process import ManagedProcess, free_port
from helpers import get, poll

from maie.celery import default_node_name

CELERY = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"


@pytest.fixture
def two_pools(redis_client: redis.Redis, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`celery -A maie worker -Q enhance` and `-Q summary`, exactly as the README prints them."""
    clean_redis(redis_client)
    env = base_env(LOG_DIR=str(tmp_path / "logs"))
    pools = [
        ManagedProcess(
            f"{queue} worker",
            [CELERY, "-A", "maie", "worker", "-Q", queue],
            tmp_path / f"{queue}.out",
            env=env,
            cwd=tmp_path,
        )
        for queue in ("enhance", "summary")
    ]
    try:
        for pool in pools:
            pool.start()
        for pool in pools:
            pool.wait_logged(" ready.", 120, poll=0.3)
        yield env
    finally:
        for pool in pools:
            pool.stop(timeout=60)


def test_the_two_pools_show_as_two_workers(two_pools: dict[str, str], tmp_path: Path) -> None:
    def nodes() -> set[str]:
        proc = subprocess.run(
            [CELERY, "-A", "maie", "inspect", "ping", "--json", "--timeout", "5"],
            cwd=tmp_path,
            env=two_pools,
            capture_output=True,
            text=True,
            timeout=120,
        )
        replies = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {}
        return set(replies)

    expected = {default_node_name(["enhance"]), default_node_name(["summary"])}
    assert {name.split("@")[0] for name in expected} == {"enhance", "summary"}
    poll("both pools answering ping under their own names", lambda: nodes() == expected)
    for queue in ("enhance", "summary"):
        assert "DuplicateNodenameWarning" not in (tmp_path / f"{queue}.out").read_text(errors="replace")


def test_bare_flower_refuses_to_start_without_auth(tmp_path: Path) -> None:
    proc = subprocess.run(
        [CELERY, "-A", "maie", "flower"],
        cwd=tmp_path,
        env=base_env(FLOWER_PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "FLOWER_BASIC_AUTH is not set" in lines[0], proc.stderr


def test_bare_flower_takes_its_auth_and_port_from_dot_env(redis_client: redis.Redis, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(f"FLOWER_BASIC_AUTH=ops:env-file-pw\nFLOWER_PORT={port}\n")
    cmd = [CELERY, "-A", "maie", "flower"]
    flower = ManagedProcess("Flower", cmd, tmp_path / "flower.out", env=base_env(), cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    flower.start().wait_ready(lambda: get(f"{url}/healthcheck")[0] == 200, 60, poll=0.3)
    try:
        for path in ("/", "/tasks", "/broker", "/api/workers"):
            assert get(url + path)[0] == 401, path
        assert get(url + "/", auth=("ops", "wrong"))[0] == 401
        assert get(url + "/api/workers", auth=("ops", "env-file-pw"))[0] == 200
    finally:
        flower.stop(timeout=60)
    text = flower.log()
    assert f"Visit me at http://127.0.0.1:{port}" in text, text[-2000:]
    assert "env-file-pw" not in text


def test_start_flower_script_reads_dot_env(tmp_path: Path) -> None:
    # A copy of the repository's scripts with a .env of its own (the script runs from its root).
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    port = free_port()
    (repo / ".env").write_text(f"FLOWER_BASIC_AUTH=ops:script-env-pw\nFLOWER_PORT={port}\n")
    env = base_env(MAIE_RUN_DIR=str(tmp_path / "run"), LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    started = subprocess.run(
        [str(repo / "scripts" / "start-flower.sh"), "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    pid = int((tmp_path / "run" / "flower.pid").read_text().split()[0]) if started.returncode == 0 else 0
    try:
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{port}"
        assert get(url + "/")[0] == 401
        assert get(url + "/api/workers", auth=("ops", "script-env-pw"))[0] == 200
    finally:
        if pid:
            stopped = subprocess.run(
                [str(repo / "scripts" / "kill_maie.sh"), "--timeout", "30"], env=env, timeout=120
            )
            assert stopped.returncode == 0
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
