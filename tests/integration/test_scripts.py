"""The operations scripts as operators run them: detached pools, a job through them, kill_maie.sh.

The pools started here use a Redis of their own (a private redis-server when one is installed, else
DB 12 of the tests' Redis), so no other worker takes their tasks, and their pid files and logs live
in the test's tmp directory (MAIE_RUN_DIR, LOG_DIR).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.server_process import FakeServerProcess
from ops import (  # noqa: F401
    SCRIPTS,
    alive,
    ops_env_fixture,
    pid_of,
    script,
    scripts_redis_fixture,
    scripts_redis_url_fixture,
)

from maie import submit
from maie.settings import load_settings

TRANSCRIPT = (
    "Chair: we open the budget review with the harbour ferry numbers\n"
    "Treasurer: the ferry costs rose by four percent this quarter\n"
)


@pytest.fixture
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose name looks like a worker's."""
    proc = subprocess.Popen(["bash", "-c", "exec -a celery-worker-lookalike sleep 600"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_detached_pools_run_a_job_and_kill_maie_stops_exactly_them(
    ops_env: dict[str, str], tmp_path: Path, lookalike: subprocess.Popen[bytes], server_a: FakeServerProcess
) -> None:
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    for pool in ("enhance", "summary"):
        proc = script("start-worker.sh", pool, "--detach", env=ops_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"worker-{pool} started" in proc.stdout
    pids = {pool: pid_of(run_dir, f"worker-{pool}") for pool in ("enhance", "summary")}
    for pool, pid in pids.items():
        assert alive(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        assert f"-Q {pool} -P threads -c 16 -n {pool}@%h -E" in cmdline.replace("\0", " ")
        assert (log_dir / f"worker-{pool}.out").is_file()

    # A second start of a running pool is refused and leaves the first alone.
    again = script("start-worker.sh", "enhance", "--detach", env=ops_env)
    assert again.returncode == 1 and "already running" in again.stderr
    assert pid_of(run_dir, "worker-enhance") == pids["enhance"]

    url = ops_env["CELERY_BROKER_URL"]
    settings = load_settings(env_file=None, celery_broker_url=url, celery_result_backend=url)
    job = submit(TRANSCRIPT, settings=settings)
    result = job.wait(timeout=90)
    assert result.status == "SUCCESS", result.error
    assert result.summary is not None and result.enhanced_text
    assert any(e["path"].endswith("/chat/completions") for e in server_a.log())
    assert f"job={job.id}" in (log_dir / "app.log").read_text()

    stopped = script("kill_maie.sh", "--timeout", "60", env=ops_env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for pool, pid in pids.items():
        assert f"worker-{pool}: stopped (pid {pid})" in stopped.stdout
        assert not alive(pid)
    assert list(run_dir.glob("*.pid")) == []
    assert lookalike.poll() is None  # the look-alike was never a target

    nothing = script("kill_maie.sh", env=ops_env)
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout


def test_stale_pid_files_never_kill_an_unrelated_process(
    ops_env: dict[str, str], tmp_path: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A process whose command line even looks like a summary worker's, but started at another time
    # than the one recorded: a recycled pid.
    similar = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "-A", "maie", "worker", "-Q", "summary", "-P"]
    )
    try:
        (run_dir / "worker-enhance.pid").write_text(f"{lookalike.pid}\n")
        (run_dir / "worker-summary.pid").write_text(f"{similar.pid}\nstarttime=1\n")
        (run_dir / "flower.pid").write_text("4194999\n")  # above any pid: not running
        (run_dir / "vllm-enhance.pid").write_text("not-a-pid\n")
        proc = script("kill_maie.sh", "--timeout", "5", env=ops_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"worker-enhance: pid {lookalike.pid} is now another process" in proc.stdout
        assert f"worker-summary: pid {similar.pid} is now another process" in proc.stdout
        assert "flower: not running" in proc.stdout
        assert "vllm-enhance:" in proc.stdout
        assert lookalike.poll() is None and similar.poll() is None
        assert list(run_dir.glob("*.pid")) == []
    finally:
        similar.kill()
        similar.wait(10)


def test_start_worker_refuses_unknown_pools_and_removed_names(
    ops_env: dict[str, str], tmp_path: Path
) -> None:
    proc = script("start-worker.sh", "translate", env=ops_env)
    assert proc.returncode == 2 and "unknown pool 'translate'" in proc.stderr
    legacy = {**ops_env, "LLM_SERVER__BASE_URL": "http://localhost:8000/v1"}
    proc = script("start-worker.sh", "enhance", "--detach", env=legacy)
    assert proc.returncode == 2
    assert "LLM_SERVER__BASE_URL (set in environment) is no longer supported" in proc.stderr
    assert "use LLM_SERVER__ENHANCE_BASE_URL" in proc.stderr
    assert not (tmp_path / "run" / "worker-enhance.pid").exists()


def test_detached_start_that_fails_shows_the_output_and_leaves_no_pid_file(
    ops_env: dict[str, str], tmp_path: Path
) -> None:
    proc = script("start-worker.sh", "summary", "--detach", "--no-such-option", env=ops_env)
    assert proc.returncode == 1
    assert "worker-summary exited during start-up" in proc.stderr
    assert "no-such-option" in proc.stderr  # Celery's own complaint, from the output's tail
    assert not (tmp_path / "run" / "worker-summary.pid").exists()


def test_vllm_server_script_refuses_bad_task_and_port(ops_env: dict[str, str]) -> None:
    proc = script("start-vllm-server.sh", "translate", env=ops_env)
    assert proc.returncode == 2 and "unknown task 'translate'" in proc.stderr
    proc = script("start-vllm-server.sh", "summary", env={**ops_env, "VLLM_SERVER_PORT": "80a"})
    assert proc.returncode == 2 and "VLLM_SERVER_PORT must be a port number" in proc.stderr


def test_kill_maie_rejects_a_bad_timeout(ops_env: dict[str, str]) -> None:
    proc = script("kill_maie.sh", "--timeout", "soon", env=ops_env)
    assert proc.returncode == 2 and "whole number of seconds" in proc.stderr
