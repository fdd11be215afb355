"""Two pools sharing one log directory with rotation forced (tiny LOG_MAX_BYTES, DEBUG level):
every line names its job and pool, no line is lost, duplicated or cut into another, and the HTTP
libraries' DEBUG chatter stays out."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import Worker, clean_redis, dual_env, start_worker
from fakes.server_process import FakeServerProcess

from maie import submit
from maie.settings import load_settings

JOBS = 24
MAX_BYTES = 40_000
LINES = [f"Speaker {i % 3}: item {i} of the agenda is the quarterly ledger review" for i in range(12)]
HEAD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[job=([0-9a-f]{32}|-)\] \[pool=(enhance|summary)\] "
    r"\d+ [\w.]+: "
)
CONTINUATION = re.compile(r"\[job=([0-9a-f]{32}|-)\] \[pool=(enhance|summary)\] \| ")


@pytest.fixture(scope="module")
def pools(
    redis_client: redis.Redis,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    clean_redis(redis_client)
    log_dir = tmp_path_factory.mktemp("shared-logs")
    env = dual_env(
        server_a,
        server_b,
        LOG_LEVEL="DEBUG",
        LOG_MAX_BYTES=str(MAX_BYTES),
        LOG_BACKUP_COUNT="1000",  # nothing deleted: every line can be counted
        CHUNK_MAX_TOKENS="40",
    )
    workers: list[Worker] = []
    try:
        for queue in ("enhance", "summary"):
            workers.append(start_worker(queue, env, log_dir, concurrency=4))
        yield log_dir
    finally:
        for worker in workers:
            worker.stop()


def all_lines(log_dir: Path) -> list[str]:
    """The lines of app.log and its rotated files, oldest file first (app.log.N ... app.log.1, app.log)."""
    rotated = sorted(log_dir.glob("app.log.*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    lines: list[str] = []
    for path in [*rotated, log_dir / "app.log"]:
        lines += path.read_text(encoding="utf-8").splitlines()
    return lines


def test_two_pools_share_rotating_logs_without_losing_a_line(
    pools: Path, server_a: FakeServerProcess, server_b: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_a.reset()
    server_b.reset()
    monkeypatch.setenv("CHUNK_MAX_TOKENS", "40")
    settings = load_settings(env_file=None)
    text = "\n".join(LINES)
    jobs = [submit(f"{text}\nChair: meeting {n} closes\n", settings=settings) for n in range(JOBS)]
    chunks: dict[str, int] = {}
    for job in jobs:
        result = job.wait(timeout=180)
        assert result.status == "SUCCESS", result.error
        chunks[job.id] = len(result.chunks)
    assert min(chunks.values()) >= 3  # several enhance tasks per job

    expected = Counter[str]()
    for job_id, n in chunks.items():
        for i in range(n):
            expected[f"[job={job_id}] [pool=enhance] received {job_id}-enhance-{i}"] += 1
            expected[f"[job={job_id}] [pool=enhance] chunk {i} enhanced"] += 1
        expected[f"[job={job_id}] [pool=summary] received {job_id}"] += 1
        expected[f"[job={job_id}] [pool=summary] summary done"] += 1

    def seen() -> Counter[str]:
        found = Counter[str]()
        for line in all_lines(pools):
            head = HEAD.match(line)
            if head is None:
                continue
            tags = f"[job={head.group(1)}] [pool={head.group(2)}]"
            received = re.search(r"Task maie\.\w+\[([\w-]+)\] received$", line)
            if received:
                found[f"{tags} received {received.group(1)}"] += 1
            enhanced = re.search(r"maie\.tasks: (chunk \d+ enhanced):", line)
            if enhanced:
                found[f"{tags} {enhanced.group(1)}"] += 1
            if re.search(r"maie\.tasks: summary done:", line):
                found[f"{tags} summary done"] += 1
        return found

    # Celery logs "succeeded" after the result is stored: give the last lines a moment to land.
    deadline = time.monotonic() + 60
    while seen() != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    found = seen()
    missing = expected - found
    extra = found - expected
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])

    lines = all_lines(pools)
    rotated = list(pools.glob("app.log.*"))
    assert len(rotated) >= 3, "rotation was not forced"
    # Rotated by one process at a time, each old file was full when it was rotated (processes
    # rotating a file another still writes to leave fragments behind).
    sizes = {path.name: path.stat().st_size for path in rotated}
    assert all(size > MAX_BYTES // 2 for size in sizes.values()), sizes
    # Every line is whole and names job and pool (a traceback's lines repeat the tags).
    bad = [line for line in lines if not (HEAD.match(line) or CONTINUATION.match(line))]
    assert not bad, bad[:5]
    # The files are in the order things happened: a job's summary is logged after all its chunks
    # (the chord starts it only then), so it comes later in the sequence of files. A process still
    # writing to a file another process rotated away would put it in an older file.
    position: dict[str, int] = {}
    for n, line in enumerate(lines):
        done = re.search(r"\[job=(\w+)\] \[pool=summary\] .*maie\.tasks: summary done", line)
        if done:
            position[done.group(1)] = n
    for n, line in enumerate(lines):
        chunk = re.search(r"\[job=(\w+)\] \[pool=enhance\] .*maie\.tasks: chunk \d+ enhanced", line)
        if chunk:
            assert n < position[chunk.group(1)], f"line {n} ({line}) after its job's summary"
    pools_seen = {HEAD.match(line).group(2) for line in lines if HEAD.match(line)}  # type: ignore[union-attr]
    assert pools_seen == {"enhance", "summary"}
    # At DEBUG the openai client's HTTP stack (httpx/httpcore, httpx2/httpcore2) stays at WARNING.
    loggers = {line.split(": ", 1)[0].rsplit(" ", 1)[-1] for line in lines if HEAD.match(line)}
    assert not {name for name in loggers if name.startswith(("httpx", "httpcore", "openai"))}, loggers
    assert any(name.startswith("kombu") or name.startswith("celery") for name in loggers)
