"""A detached process's console output (logs/<name>.out) is rotated, not grown without bound."""

from __future__ import annotations

import time
from pathlib import Path

from ops import alive, ops_env_fixture, pid_of, script, scripts_redis_fixture, scripts_redis_url_fixture  # noqa: F401

from maie import submit
from maie.settings import load_settings

# Well above the start-up output (so readiness is read from one file), well below what jobs write.
MAX_BYTES = 32_000
TRANSCRIPT = "\n".join(f"Clerk: line {i} of the harbour dues ledger is settled" for i in range(12))


def sinks_for(out: Path) -> list[int]:
    """Pids of the output sinks writing `out` (found by its unique path, never signalled)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"scripts/lib/rotate_out.py" in cmdline and str(out).encode() in cmdline:
                found.append(int(proc.name))
    return found


def test_worker_output_is_rotated_and_its_sink_ends_with_it(
    ops_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    out = logs / "worker-enhance.out"
    out.write_text("output of an earlier run\n")
    env = {**ops_env, "LOG_MAX_BYTES": str(MAX_BYTES), "LOG_BACKUP_COUNT": "3"}
    # DEBUG on the console: each job's tasks write a few kilobytes there.
    started = script("start-worker.sh", "enhance", "--detach", "--loglevel", "DEBUG", env=env)
    assert started.returncode == 0, started.stderr
    pid = pid_of(tmp_path / "run", "worker-enhance")
    assert alive(pid) and sinks_for(out)
    url = ops_env["CELERY_BROKER_URL"]
    settings = load_settings(
        env_file=None, celery_broker_url=url, celery_result_backend=url, chunk_max_tokens=20
    )
    third = logs / "worker-enhance.out.3"
    for _ in range(100):  # until three files were filled during this run
        if third.exists() and "output of an earlier run" not in third.read_text(errors="replace"):
            break
        job = submit(TRANSCRIPT, features=["enhance"], settings=settings)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = job.status()
            if status.chunks_total and status.chunks_done == status.chunks_total:
                break
            time.sleep(0.2)
    assert alive(pid)
    stopped = script("kill_maie.sh", "--timeout", "60", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not alive(pid)

    files = [out, *(logs / f"worker-enhance.out.{i}" for i in (1, 2, 3))]
    assert all(path.exists() for path in files), sorted(p.name for p in logs.iterdir())
    assert not (logs / "worker-enhance.out.4").exists()  # LOG_BACKUP_COUNT old files, no more
    for path in files:
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        longest = max((len(line.encode()) for line in lines), default=0)
        assert path.stat().st_size <= max(MAX_BYTES, longest), path.name
    assert "output of an earlier run" not in out.read_text()
    # The sink ends with the process it follows (EOF), without being signalled.
    deadline = time.monotonic() + 60
    while sinks_for(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sinks_for(out)
