"""Recovery: a job whose task message the broker lost still ends, and what fails says so in one line.

- A chunk's message (and, separately, the summary's) deleted from the broker mid-job: the pools'
  reconciler sends exactly the missing task again and the job completes within its stated bound;
  the lost original arriving late changes nothing.
- A job whose missing tasks never complete fails after `JOB_MAX_REDISPATCHES`, naming them.
- The broker failing inside `apply_async`: one-line error, nothing kept, the idempotency key free.
- `ENHANCE_ON_FAILURE=raw` never turns a refused API key into a successful job.
- `maie status`, `maie result`, `maie submit` with Redis down: one line, exit code 1.

Each test runs against a redis-server of its own (see test_reliability.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from brokers import redis_depth
from conftest import base_env
from fakes.process import ManagedProcess, free_port
from fakes.server_process import FakeServerProcess
from helpers import assert_complete_once, chat_requests, maie_cli, n_chunks, transcript, wait_for
from rig import Rig, no_message_left, open_rig, release_clients

from maie import submit
from maie.canvas import chunk_task_id
from maie.errors import BackendUnavailable
from maie.lanes import with_lanes
from maie.settings import load_settings

# Quick bounds for the tests; the defaults are 1800 s and 3 rounds.
STALL = "2"


@pytest.fixture
def rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b) as r:
        yield r


def take_message(rig: Rig, queue: str, task_id: str) -> str:
    """Delete the message of task `task_id` from the Redis broker's `queue` (or its short lane);
    returns it."""
    for name in with_lanes([queue]):
        for raw in rig.client.lrange(name, 0, -1):
            if json.loads(raw)["headers"]["id"] == task_id:
                assert rig.client.lrem(name, 1, raw) == 1
                return str(raw)
    pytest.fail(f"no message of task {task_id} in queue {queue}")


def successes(rig: Rig, task: str) -> int:
    """How many runs of `task` the workers logged as succeeded."""
    return sum(
        1 for line in rig.worker_logs().splitlines() if f"Task {task}[" in line and " succeeded " in line
    )


def test_a_chunk_message_lost_by_the_broker_is_sent_again_and_a_late_original_is_harmless(rig: Rig) -> None:
    env = rig.env(JOB_STALL_SECONDS=STALL)
    source = transcript(12)
    job = submit(source, settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    assert n >= 4
    # No worker runs yet: every chunk's message waits in the queue. Chunk 1's is lost.
    lost = take_message(rig, "enhance", chunk_task_id(job.id, 1))
    started = time.monotonic()
    rig.start(env, enhance=2, summary=1)
    result = job.wait(timeout=120)
    # The stated bound: the other chunks, then JOB_STALL_SECONDS of quiet, one reconciler round
    # (a quarter of it) and the chunk and the summary; generous for loaded machines.
    assert time.monotonic() - started < 90
    assert_complete_once(result, source, n)
    assert "sent chunk task(s) 1 again (round 1)" in rig.worker_logs()
    assert len(chat_requests(rig.a)) == n and len(chat_requests(rig.b)) == 1  # each chunk once
    assert rig.client.zscore("maie:active", job.id) is None  # the job left the reconciler's watch
    # The lost message turns up after all (a broker that only delayed it): chunk 1 is already in,
    # so it only completes the chord, and the chord's summary task sees the result is there.
    before = len(chat_requests(rig.a))
    rig.client.lpush("enhance", lost)
    wait_for("the late chunk and the chord's summary task", lambda: successes(rig, "maie.summarize") == 2, 60)
    wait_for("no message left", lambda: no_message_left(rig), 30)
    assert job.result() == result and job.store.enhanced_count(job.id) == n
    assert len(chat_requests(rig.a)) == before  # chunk 1 is already enhanced: no second call
    assert len(chat_requests(rig.b)) == 1  # no second summary


def test_the_summary_message_lost_by_the_broker_is_sent_again(rig: Rig) -> None:
    env = rig.env(JOB_STALL_SECONDS=STALL)
    rig.start(env, enhance=2)
    source = transcript(6)
    job = submit(source, settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    # Every chunk done, the chord sent its summary task; no summary pool yet. The message is lost.
    wait_for("the summary task in its queue", lambda: redis_depth(rig.client, "summary") == 1, 60)
    take_message(rig, "summary", job.id)
    started = time.monotonic()
    rig.start(env, summary=1)
    result = job.wait(timeout=120)
    assert time.monotonic() - started < 90
    assert_complete_once(result, source, n)
    assert result.summary is not None
    assert "sent the summary task again (round 1)" in rig.worker_logs()
    assert len(chat_requests(rig.b)) == 1


def test_missing_tasks_that_never_complete_fail_the_job_naming_them(rig: Rig) -> None:
    # Only a summary pool runs (its reconciler watches every job); every chunk message is lost, and
    # so is every message the reconciler sends again.
    env = rig.env(JOB_STALL_SECONDS=STALL, JOB_MAX_REDISPATCHES="1")
    job = submit(transcript(6), settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    rig.client.delete(*with_lanes(["enhance"]))
    rig.start(env, summary=1)
    deadline = time.monotonic() + 90
    while (result := job.result()) is None:
        rig.client.delete(*with_lanes(["enhance"]))
        assert time.monotonic() < deadline, "the job neither completed nor failed"
        time.sleep(0.1)
    assert result.status == "FAILURE" and result.error is not None
    assert (result.error.stage, result.error.code) == ("enhance", "job_stalled")
    chunks = ", ".join(map(str, range(n)))
    assert f"chunk task(s) {chunks} never completed, although sent again 1 time(s)" in result.error.message
    assert "JOB_MAX_REDISPATCHES=1" in result.error.message
    assert chat_requests(rig.a) == [] and chat_requests(rig.b) == []


def test_a_broker_failure_while_queueing_is_one_line_keeps_nothing_and_frees_the_key(
    rig: Rig, tmp_path: Path
) -> None:
    # A broker that accepts one client only: submit's queue-depth check takes that connection,
    # so the publish in apply_async cannot connect (kombu OperationalError).
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--maxclients", "1"]
    broker = ManagedProcess("one-client broker", cmd, tmp_path / "broker.out").start()
    broker_url = f"redis://127.0.0.1:{port}/0"
    try:
        broker.wait_ready(lambda: _listening(port), 10, poll=0.05)
        settings = load_settings(
            env_file=None, celery_broker_url=broker_url, celery_result_backend=rig.redis.url
        )
        before = set(rig.client.scan_iter("maie:job:*"))
        with pytest.raises(BackendUnavailable) as info:
            submit(transcript(3), idempotency_key="order-17", settings=settings)
        message = str(info.value)
        assert message.startswith(f"cannot queue the job: broker {broker_url} unreachable: ")
        assert "\n" not in message
        assert set(rig.client.scan_iter("maie:job:*")) == before  # nothing kept
        assert rig.client.get("maie:idem:order-17") is None  # the key is free for a new attempt
        assert rig.client.zcard("maie:active") == 0
    finally:
        release_clients(broker_url)
        broker.stop(timeout=10)


def _listening(port: int) -> bool:
    probe = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        return bool(probe.ping())
    except redis.RedisError as exc:
        return "max number of clients" in str(exc)
    finally:
        probe.close()  # the broker's one client slot is for submit


def test_raw_fallback_never_turns_a_refused_api_key_into_a_successful_job(rig: Rig) -> None:
    env = rig.env(ENHANCE_ON_FAILURE="raw", LLM_SERVER__ENHANCE_API_KEY="sk-wrong-key")
    rig.start(env, enhance=2, summary=1)
    result = submit(transcript(3), settings=rig.settings()).wait(timeout=60)
    assert result.status == "FAILURE" and result.error is not None
    assert (result.error.stage, result.error.code, result.error.chunk) == ("enhance", "config_error", 0)
    assert "refused the API key (HTTP 401)" in result.error.message
    assert chat_requests(rig.b) == []


def test_cli_with_redis_down_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = base_env(CELERY_BROKER_URL=dead, CELERY_RESULT_BACKEND=dead)
    (tmp_path / "t.txt").write_text(transcript(3))
    for args in (
        ["status", "0" * 32],
        ["result", "0" * 32],
        ["submit", "t.txt"],
        ["submit", "--wait", "t.txt"],
    ):
        proc = maie_cli(*args, env=env, cwd=tmp_path)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stdout == "", (args, proc.stderr)
        # submit meets the broker first (the queue depth), the other commands the job store.
        what = "the broker" if args[0] == "submit" else "Redis"
        assert proc.stderr.startswith(f"maie: error: cannot reach {what} at {dead}: "), args
        assert "Traceback" not in proc.stderr
