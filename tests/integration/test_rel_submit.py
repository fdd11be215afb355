"""Reliability at submission: backpressure, cancellation, idempotent submission, bad input.

Whatever `submit` refuses, it refuses at once with one line, and nothing is queued; whatever it
accepts is followed to an end. Each test runs against a redis-server of its own (see
test_reliability.py), so "nothing queued" is checked on queues no other test touches.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from brokers import redis_depth
from fakes.server_process import FakeServerProcess
from helpers import BAD_INPUTS, Bad, chat_requests, in_flight, maie_cli, n_chunks, transcript, wait_for
from rig import Rig, no_message_left, open_rig

from maie import Job, submit
from maie.errors import QueueFull
from maie.submit import chunk_task_id


@pytest.fixture
def rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b) as r:
        yield r


def job_keys(rig: Rig) -> set[str]:
    return set(rig.client.scan_iter("maie:job:*"))


def queued(rig: Rig) -> tuple[int, int]:
    if rig.vhost is not None:
        enhance, summary = rig.vhost.ready("enhance", "summary")
        return enhance, summary
    return redis_depth(rig.client, "enhance"), redis_depth(rig.client, "summary")


# -- 5. backpressure -----------------------------------------------------------------------------


@pytest.mark.broker
def test_full_queue_refuses_at_once_with_one_line_and_queues_nothing(rig: Rig, tmp_path: Path) -> None:
    settings = rig.settings(queue_max_depth=3, chunk_max_tokens=40)
    # No worker consumes: the first job's chunks stay queued, past the limit.
    first = submit(transcript(9), settings=settings)
    assert queued(rig)[0] == n_chunks(first) >= 3
    before = (queued(rig), job_keys(rig))
    started = time.monotonic()
    with pytest.raises(QueueFull) as info:
        submit(transcript(3), settings=settings, idempotency_key="retry-me-later")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message
    assert f"queue enhance holds {n_chunks(first)} tasks (QUEUE_MAX_DEPTH=3)" in message
    assert (queued(rig), job_keys(rig)) == before
    assert not rig.client.exists("maie:idem:retry-me-later")  # the key is free for the next try
    # The command line: one line on stderr, no job id on stdout, still nothing queued.
    path = tmp_path / "t.txt"
    path.write_text(transcript(3))
    proc = maie_cli("submit", str(path), env=rig.env(QUEUE_MAX_DEPTH="3"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("maie: error: queue enhance holds")
    assert (queued(rig), job_keys(rig)) == before


# -- 7. idempotent submission --------------------------------------------------------------------


def test_same_idempotency_key_returns_the_existing_job_and_queues_nothing(rig: Rig, tmp_path: Path) -> None:
    settings = rig.settings()
    job = submit(transcript(3), settings=settings, idempotency_key="meeting-2024-05-02")
    before = (queued(rig), job_keys(rig))
    assert before[0] == (1, 0)
    again = submit(transcript(3), settings=settings, idempotency_key="meeting-2024-05-02")
    assert again.id == job.id
    assert (queued(rig), job_keys(rig)) == before
    # The command line too, with another transcript: the key names the job.
    path = tmp_path / "other.txt"
    path.write_text(transcript(6))
    proc = maie_cli(
        "submit", str(path), "--idempotency-key", "meeting-2024-05-02", env=rig.env(), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == job.id
    assert (queued(rig), job_keys(rig)) == before
    # Another key is another job.
    other = submit(transcript(3), settings=settings, idempotency_key="meeting-2024-05-03")
    assert other.id != job.id and queued(rig) == (2, 0)


# -- 6. cancellation -----------------------------------------------------------------------------


def settled(job: Job, n: int) -> bool:
    """Every chunk task of the job is in a final state (revoked, failed or done)."""
    app = job.app
    return all(
        app.AsyncResult(chunk_task_id(job.id, i)).state in ("REVOKED", "FAILURE", "SUCCESS") for i in range(n)
    )


def cancel_mid_enhancement(rig: Rig, cancel: Callable[[Job], None]) -> Job:
    """Submit, cancel (with `cancel(job)`) while two chunks hang on server A, then check the outcome."""
    rig.a.reset()
    rig.b.reset()
    # A fresh endpoint: the hung calls of a previous round left it marked down, and while it is
    # down only one call at a time (a probe) would reach it.
    for key in rig.client.scan_iter("maie:endpoint:*"):
        rig.client.delete(key)
    rig.a.faults([{"kind": "hang"}])
    job = submit(transcript(16), settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    assert n >= 8
    wait_for("two chunks in flight", lambda: len(in_flight(rig.a)) == 2, 30)
    cancel(job)
    status = job.status()
    assert status.state == "CANCELLED"
    result = job.wait(timeout=5)
    assert result.status == "CANCELLED" and result.error is not None
    assert result.error.code == "job_cancelled"
    # The two running calls end at their timeout (2 s): the server saw each client leave.
    wait_for("the running calls to end", lambda: not in_flight(rig.a), 30)
    assert all(e["duration"] < 10 for e in chat_requests(rig.a))
    # Every chunk settles without reaching the LLM; the summary never runs.
    wait_for("every chunk task to settle", lambda: settled(job, n), 30)
    wait_for("no message left", lambda: no_message_left(rig), 30)
    assert len(chat_requests(rig.a)) == 2
    assert chat_requests(rig.b) == []
    assert job.status().state == "CANCELLED" and job.result() == result
    return job


def test_cancel_revokes_pending_chunks_and_the_summary_by_api_and_cli(rig: Rig, tmp_path: Path) -> None:
    env = rig.env(LLM_SERVER__REQUEST_TIMEOUT_SECONDS="2", TASK_MAX_RETRIES="3", TASK_RETRY_BACKOFF_MAX="1")
    rig.start(env, enhance=2, summary=1)
    # Cancelling a finished job changes nothing: it stays a success, in its status and its result.
    done = submit(transcript(3), settings=rig.settings())
    assert done.wait(timeout=30).status == "SUCCESS"
    done.cancel()
    after = done.result()
    assert done.status().state == "SUCCESS" and after is not None and after.status == "SUCCESS"

    cancel_mid_enhancement(rig, lambda job: job.cancel())

    def cli_cancel(job: Job) -> None:
        proc = maie_cli("cancel", job.id, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"{job.id} cancelled"

    job = cancel_mid_enhancement(rig, cli_cancel)
    status = maie_cli("status", job.id, env=env, cwd=tmp_path)
    assert status.returncode == 0 and f"{job.id} CANCELLED" in status.stdout
    result = maie_cli("result", job.id, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"maie: job {job.id} cancelled at stage job: job_cancelled: job was cancelled"
    )


def test_a_job_cancelled_while_no_worker_runs_never_reaches_the_llm(rig: Rig) -> None:
    # No worker hears the revocation: each chunk checks the job's cancelled mark when it starts.
    job = submit(transcript(16), settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    job.cancel()
    rig.start(rig.env(), enhance=4, summary=1)
    wait_for("every chunk task to settle", lambda: settled(job, n), 30)
    wait_for("no message left", lambda: no_message_left(rig), 30)
    assert chat_requests(rig.a) == [] and chat_requests(rig.b) == []
    assert job.status().state == "CANCELLED" and job.wait(timeout=5).status == "CANCELLED"


# -- 8. bad input, through the command line ------------------------------------------------------


@pytest.fixture(scope="module")
def bad_runs(
    tmp_path_factory: pytest.TempPathFactory, server_a: FakeServerProcess, server_b: FakeServerProcess
) -> Iterator[tuple[Rig, dict[str, subprocess.CompletedProcess[bytes]]]]:
    """Every bad submission, run at once (each `maie submit` is its own process) on one Redis."""
    base = tmp_path_factory.mktemp("bad-input")
    with open_rig(base, server_a, server_b) as rig:
        maie = str(Path(sys.executable).parent / "maie")

        def run(bad: Bad) -> subprocess.CompletedProcess[bytes]:
            where = base / bad.id
            where.mkdir()
            target = where / bad.name
            if bad.id == "directory":
                target.mkdir()
            elif bad.content is not None:
                target.write_bytes(bad.content)
            source = "-" if bad.stdin is not None else str(target)
            return subprocess.run(
                [maie, "submit", source, *bad.args],
                input=bad.stdin if bad.stdin is not None else b"",
                env={**rig.env(), **bad.env},
                cwd=where,
                capture_output=True,
                timeout=120,
            )

        with ThreadPoolExecutor(4) as ex:
            runs = dict(zip([b.id for b in BAD_INPUTS], ex.map(run, BAD_INPUTS), strict=True))
        yield rig, runs


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_queues_nothing(
    bad: Bad, bad_runs: tuple[Rig, dict[str, subprocess.CompletedProcess[bytes]]]
) -> None:
    rig, runs = bad_runs
    proc = runs[bad.id]
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, stderr
    assert proc.stdout == b""
    assert stderr.count("\n") == 1 and stderr.startswith("maie: error: "), stderr
    assert bad.expect.lower() in stderr.lower(), stderr
    assert queued(rig) == (0, 0)
    assert job_keys(rig) == set()
    assert list(rig.client.scan_iter("maie:*")) == []
