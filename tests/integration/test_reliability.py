"""Reliability: a submitted job is completed or reported failed with its stage and reason.

Never lost (a worker killed mid-task, a warm shutdown, a Redis restart), never stuck (an LLM that is
down, hangs or flaps: bounded retries, then a failure naming stage, endpoint and cause), never
silently wrong (every chunk exactly once, in order).

These tests start workers with settings of their own (a short visibility timeout, few retries), so
each runs against a redis-server of its own on a free 127.0.0.1 port: workers of other tests, with
other settings, never take their tasks, and nothing here touches the shared test database. The
helpers at the top are also used by the other `test_rel_*` modules.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.process import free_port
from fakes.server import FakeOpenAIServer
from fakes.server_process import FakeServerProcess
from helpers import assert_complete_once, chat_requests, in_flight, maie_cli, n_chunks, transcript, wait_for
from rig import Rig, no_message_left, open_rig

from maie import submit
from maie.errors import InputError


@pytest.fixture
def rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b) as r:
        yield r


# -- 1. a worker killed mid-task -----------------------------------------------------------------


@pytest.mark.broker
def test_worker_killed_mid_chunk_is_redelivered_and_the_job_completes_once(rig: Rig) -> None:
    env = rig.env(BROKER_VISIBILITY_TIMEOUT="5")
    first = rig.start(env, enhance=2, summary=1)["enhance"]
    source = transcript(12, {7: "zebra"})
    rig.a.faults([{"kind": "delay", "seconds": 60, "match": "zebra", "times": 1}])
    job = submit(source, settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    zebra = next(i for i, text in job.store.raw_chunks(job.id).items() if "zebra" in text)
    assert n >= 4
    # The chunk holding "zebra" is in flight on the fake server: SIGKILL takes the whole worker
    # process (threads pool) with it, before the chunk's message was acknowledged.
    wait_for("the delayed chunk to reach server A", lambda: in_flight(rig.a, "zebra"), 30)
    first.stop(signal.SIGKILL)
    assert first.proc.returncode == -signal.SIGKILL
    # After the visibility timeout Redis hands the message to the worker that replaces it.
    rig.worker("enhance", env, concurrency=2)
    result = job.wait(timeout=180)  # bounded; generous for loaded CI machines
    assert_complete_once(result, source, n)
    assert [e["status"] for e in chat_requests(rig.a, "zebra")] == [None, 200]  # cut, then done once
    assert len(chat_requests(rig.b)) == 1  # one summary
    wait_for("no message left", lambda: no_message_left(rig), 30)
    assert job.result() == result and job.store.enhanced_count(job.id) == n
    # Deliveries are counted per chunk: the killed chunk was delivered twice.
    deliveries = rig.client.hgetall(f"maie:job:{job.id}:deliveries")
    assert deliveries[f"chunk {zebra}:0"] == "2"
    assert all(deliveries[f"chunk {i}:0"] in ("1", "2") for i in range(n))


@pytest.mark.broker
def test_a_chunk_that_keeps_killing_its_worker_fails_the_job_instead_of_looping(rig: Rig) -> None:
    from maie.task_base import MAX_DELIVERIES

    env = rig.env(BROKER_VISIBILITY_TIMEOUT="5")
    job = submit(transcript(3), settings=rig.settings())
    # As if chunk 0 had already been delivered MAX_DELIVERIES times, its worker dying each time
    # (the previous test shows a real kill adds one delivery).
    rig.client.hset(f"maie:job:{job.id}:deliveries", "chunk 0:0", MAX_DELIVERIES)
    rig.start(env, enhance=2, summary=1)
    result = job.wait(timeout=30)
    assert result.status == "FAILURE" and result.error is not None
    assert (result.error.stage, result.error.code, result.error.chunk) == ("enhance", "worker_lost", 0)
    assert f"its worker stopped while running it {MAX_DELIVERIES} times" in result.error.message
    assert chat_requests(rig.a) == [] and chat_requests(rig.b) == []


# -- 2. warm shutdown ----------------------------------------------------------------------------


@pytest.mark.broker
def test_warm_shutdown_finishes_running_chunks_takes_nothing_new_and_loses_nothing(rig: Rig) -> None:
    env = rig.env(BROKER_VISIBILITY_TIMEOUT="5")
    first = rig.start(env, enhance=2, summary=1)["enhance"]
    source = transcript(12)
    rig.a.faults([{"kind": "delay", "seconds": 2}])
    job = submit(source, settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    assert n >= 5
    wait_for("two chunks in flight", lambda: len(in_flight(rig.a)) == 2, 30)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0
    # The two running chunks were finished and stored; nothing else was taken.
    assert [e["status"] for e in chat_requests(rig.a)] == [200, 200]
    assert job.store.enhanced_count(job.id) == 2
    assert job.status().state in ("PENDING", "RUNNING")
    # A new worker does the rest: the job completes and no chunk is done twice.
    rig.a.reset()
    rig.worker("enhance", env)
    result = job.wait(timeout=60)
    assert_complete_once(result, source, n)
    wait_for("no message left", lambda: no_message_left(rig), 30)
    assert len(chat_requests(rig.a)) == n - 2


# -- 3. the LLM endpoint down, hanging, flapping -------------------------------------------------


@pytest.mark.broker
def test_llm_connection_refused_fails_after_bounded_retries_naming_stage_endpoint_and_cause(
    rig: Rig, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = rig.env(LLM_SERVER__ENHANCE_BASE_URL=dead, TASK_MAX_RETRIES="2", TASK_RETRY_BACKOFF_MAX="1")
    worker = rig.worker("enhance", env)
    started = time.monotonic()
    job = submit(transcript(3), settings=rig.settings())
    result = job.wait(timeout=40)
    assert time.monotonic() - started < 40
    assert result.status == "FAILURE" and result.error is not None
    error = result.error
    assert (error.stage, error.code, error.chunk) == ("enhance", "backend_unavailable", 0)
    assert f"cannot connect to {dead}" in error.message
    assert job.status().state == "FAILURE" and job.status().error == error
    # Exactly TASK_MAX_RETRIES retries, then the failure; the summary never ran.
    log = worker.log()
    assert "retry 1 in" in log and "retry 2 in" in log and "retry 3 in" not in log
    assert chat_requests(rig.b) == []
    # The command line says the same, in one line.
    proc = maie_cli("result", job.id, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "at stage enhance (chunk 0): backend_unavailable" in proc.stderr and dead in proc.stderr


@pytest.mark.broker
def test_llm_down_then_back_up_in_time_completes(rig: Rig) -> None:
    port = free_port()
    env = rig.env(
        LLM_SERVER__ENHANCE_BASE_URL=f"http://127.0.0.1:{port}/v1",
        TASK_MAX_RETRIES="40",
        TASK_RETRY_BACKOFF_MAX="1",
    )
    workers = rig.start(env, enhance=4, summary=1)
    source = transcript(3)
    job = submit(source, settings=rig.settings())
    wait_for("a refused connection and its retry", lambda: "retry 1 in" in workers["enhance"].log(), 30)
    assert job.status().state in ("PENDING", "RUNNING")
    with FakeOpenAIServer(port=port, name="A2", model="enhance-model", api_key="sk-test-enhance-key") as late:
        result = job.wait(timeout=60)
        served = [e["status"] for e in late.log() if e["path"].endswith("/chat/completions")]
    assert_complete_once(result, source, 1)
    assert served == [200]


@pytest.mark.broker
def test_llm_flapping_500_and_429_is_retried_with_backoff_and_completes(rig: Rig) -> None:
    rig.start(rig.env(TASK_MAX_RETRIES="10", TASK_RETRY_BACKOFF_MAX="1"), enhance=4, summary=1)
    # Seeded: the first requests are hit by both faults, whichever chunk sends them; a chunk failing
    # 11 times in a row has a probability of about 1e-6.
    rig.a.faults(
        [
            {"kind": "status", "status": 500, "probability": 0.2, "seed": 1},
            {"kind": "status", "status": 429, "probability": 0.15, "seed": 1001},
        ]
    )
    rig.b.faults([{"kind": "status", "status": 503, "times": 2}])
    source = transcript(16)
    job = submit(source, settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    assert n >= 8
    result = job.wait(timeout=90)
    assert_complete_once(result, source, n)
    statuses = [e["status"] for e in chat_requests(rig.a)]
    assert 500 in statuses and 429 in statuses
    assert statuses.count(200) == n  # each chunk answered once: no duplicate
    assert [e["status"] for e in chat_requests(rig.b)] == [503, 503, 200]


def test_llm_hanging_request_times_out_and_the_retry_completes(rig: Rig) -> None:
    env = rig.env(LLM_SERVER__REQUEST_TIMEOUT_SECONDS="1", TASK_MAX_RETRIES="2", TASK_RETRY_BACKOFF_MAX="1")
    rig.start(env, enhance=4, summary=1)
    rig.a.faults([{"kind": "hang", "times": 2}])
    source = transcript(3)
    result = submit(source, settings=rig.settings()).wait(timeout=60)
    assert_complete_once(result, source, 1)
    requests = chat_requests(rig.a)
    assert [(e["fault"], e["status"]) for e in requests] == [("hang", None), ("hang", None), (None, 200)]
    # The client gave up on each hung request at its timeout: the server saw it leave.
    assert all(e["duration"] is not None and e["duration"] < 10 for e in requests)


def test_llm_failing_for_good_fails_in_bounded_time_at_its_stage(rig: Rig) -> None:
    env = rig.env(LLM_SERVER__REQUEST_TIMEOUT_SECONDS="1", TASK_MAX_RETRIES="2", TASK_RETRY_BACKOFF_MAX="1")
    rig.start(env, enhance=4, summary=1)
    # Enhancement answers 500 every time: three attempts, then the job fails at stage enhance.
    rig.a.faults([{"kind": "status", "status": 500}])
    started = time.monotonic()
    failed = submit(transcript(3), settings=rig.settings()).wait(timeout=40)
    assert time.monotonic() - started < 40
    assert failed.status == "FAILURE" and failed.error is not None
    assert (failed.error.stage, failed.error.code) == ("enhance", "backend_unavailable")
    assert f"{rig.a.base_url} failed (HTTP 500)" in failed.error.message
    assert [e["status"] for e in chat_requests(rig.a)] == [500, 500, 500]
    # The summary endpoint hangs every time: three timed-out attempts, then stage summary fails.
    rig.a.reset()
    rig.b.faults([{"kind": "hang"}])
    started = time.monotonic()
    hung = submit(transcript(3), settings=rig.settings()).wait(timeout=40)
    assert time.monotonic() - started < 40
    assert hung.status == "FAILURE" and hung.error is not None
    assert (hung.error.stage, hung.error.code) == ("summary", "backend_unavailable")
    assert f"timed out waiting for {rig.b.base_url}" in hung.error.message
    assert len(chat_requests(rig.b)) == 3


# -- 4. Redis restarted mid-job ------------------------------------------------------------------


@pytest.fixture
def aof_rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b, appendonly=True) as r:
        yield r


def restart_redis_when(
    rig: Rig, ready: Callable[[], object], outage: float
) -> tuple[threading.Thread, list[str]]:
    """In the background: once `ready()`, SIGKILL the rig's Redis, wait `outage` s, start it again."""
    problems: list[str] = []

    def run() -> None:
        try:
            deadline = time.monotonic() + 30
            while not ready():
                if time.monotonic() > deadline:
                    problems.append("never ready to restart Redis")
                    break
                time.sleep(0.05)
            rig.redis.stop(signal.SIGKILL)
            time.sleep(outage)
            rig.redis.start()
        except Exception as exc:  # reported by the test
            problems.append(repr(exc))

    thread = threading.Thread(target=run, name="redis-restart", daemon=True)
    thread.start()
    return thread, problems


def test_redis_restart_with_append_only_file_the_job_completes(aof_rig: Rig) -> None:
    rig = aof_rig
    workers = rig.start(rig.env(BROKER_VISIBILITY_TIMEOUT="5"), enhance=2, summary=1)
    rig.a.faults([{"kind": "delay", "seconds": 2}])
    source = transcript(12)
    job = submit(source, settings=rig.settings(chunk_max_tokens=40))
    n = n_chunks(job)
    # Redis dies (SIGKILL) while two chunks are in flight and is back 2 s later; this process waits
    # on the job all along.
    thread, problems = restart_redis_when(rig, lambda: len(in_flight(rig.a)) == 2, outage=2)
    try:
        result = job.wait(timeout=90)
    finally:
        thread.join(60)
    assert problems == []
    assert_complete_once(result, source, n)
    assert all(w.proc.poll() is None for w in workers.values())  # the same workers reconnected
    assert "Connection to broker lost" in rig.worker_logs()
    # The threads pool cannot cancel running tasks: nothing may try to on reconnection.
    assert "Failed to cancel" not in rig.worker_logs() and "NotImplementedError" not in rig.worker_logs()
    # A chunk whose acknowledgement was lost with the connection runs again after the visibility
    # timeout, harmlessly: same records, same result.
    wait_for("no message left", lambda: no_message_left(rig), 30)
    assert job.result() == result and job.store.enhanced_count(job.id) == n


def test_redis_restart_without_persistence_loses_the_job_visibly_and_workers_recover(rig: Rig) -> None:
    workers = rig.start(rig.env(BROKER_VISIBILITY_TIMEOUT="5"), enhance=2, summary=1)
    rig.a.faults([{"kind": "delay", "seconds": 2}])
    job = submit(transcript(12), settings=rig.settings(chunk_max_tokens=40))
    thread, problems = restart_redis_when(rig, lambda: len(in_flight(rig.a)) == 2, outage=1)
    thread.join(60)
    assert problems == []
    # The two chunks in flight finish after the restart and write their results into the new,
    # empty Redis: the job is still seen as lost, never as a job that runs forever.
    wait_for("the chunks in flight to end", lambda: not in_flight(rig.a), 30)
    wait_for("their tasks to end", lambda: rig.worker_logs().count("Task maie.enhance_chunk[") >= 2, 30)
    try:
        lost = job.wait(timeout=20)
    except InputError as exc:
        assert "no job" in str(exc)
    else:
        assert lost.status == "FAILURE" and lost.error is not None
    assert job.status().state == "UNKNOWN"
    # The same workers reconnect and take new work, even a job submitted right after the restart.
    rig.a.reset()
    source = transcript(6)
    again = submit(source, settings=rig.settings(chunk_max_tokens=40))
    assert_complete_once(again.wait(timeout=60), source, n_chunks(again))
    assert all(w.proc.poll() is None for w in workers.values())
