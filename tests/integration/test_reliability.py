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

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from brokers import BROKER, Vhost
from conftest import Worker, dual_env, start_worker
from fakes.server import FakeOpenAIServer
from fakes.server_process import FakeServerProcess

from maie import Job, submit
from maie.enhance import normalize_words
from maie.errors import InputError
from maie.result import JobResult
from maie.settings import Settings, load_settings

# -- shared helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on 127.0.0.1, optionally persisted in an append-only file."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        # appendfsync always: every write Redis acknowledged is on disk before a SIGKILL.
        cmd += (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        )
        cmd += ["--dir", str(self.dir)]
        with open(self.dir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.05)
        finally:
            probe.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def client(self) -> redis.Redis:
        c = redis.Redis.from_url(self.url, decode_responses=True)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.stop()


def release_clients(url: str, broker_url: str | None = None) -> None:
    """Close this process's connections to a test's Redis and broker (its Celery app, its job store)."""
    from maie import celery as maie_celery
    from maie.store import redis_client

    app = maie_celery.forget_client_app(broker_url or url, url)
    if app is not None:
        backend = app._backend
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.result_consumer.stop()
            backend.client.connection_pool.disconnect()
        app.amqp.producer_pool.force_close_all()
        app.pool.force_close_all()
    for patient in (False, True):
        redis_client(url, patient).connection_pool.disconnect()


def stop_workers(workers: list[Worker], timeout: float = 20) -> None:
    """Warm-stop every live worker at once, then wait for each (SIGKILL after `timeout`)."""
    live = [w for w in workers if w.proc.poll() is None]
    for w in live:
        w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in live:
        try:
            w.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(10)


class Rig:
    """A private Redis, fake servers A (enhance) and B (summary), and worker processes on demand.

    The broker is the private Redis, or with MAIE_TEST_BROKER=amqp a RabbitMQ virtual host of the
    rig's own (the private Redis then holds results and job records only).
    """

    def __init__(
        self,
        redis_server: PrivateRedis,
        a: FakeServerProcess,
        b: FakeServerProcess,
        log_dir: Path,
        vhost: Vhost | None = None,
    ) -> None:
        self.redis = redis_server
        self.vhost = vhost
        self.a = a
        self.b = b
        self.log_dir = log_dir
        self.client = redis_server.client()
        self.workers: list[Worker] = []

    @property
    def broker_url(self) -> str:
        return self.vhost.url if self.vhost is not None else self.redis.url

    def env(self, **extra: str) -> dict[str, str]:
        """The workers' environment: endpoints A and B, this rig's Redis and broker, and `extra`."""
        env = dual_env(self.a, self.b, CELERY_BROKER_URL=self.broker_url)
        return {**env, "CELERY_RESULT_BACKEND": self.redis.url, **extra}

    def settings(self, **overrides: Any) -> Settings:
        """This process's settings for submitting to and following jobs on this rig's Redis."""
        urls = {"celery_broker_url": self.broker_url, "celery_result_backend": self.redis.url}
        return load_settings(env_file=None, **urls, **overrides)

    def worker(self, queue: str, env: dict[str, str], concurrency: int = 4) -> Worker:
        return self.start(env, **{queue: concurrency})[queue]

    def start(self, env: dict[str, str], **pools: int) -> dict[str, Worker]:
        """Start one worker per queue (queue=concurrency) at once; returns when all are ready."""
        dirs = {q: self.log_dir / f"{q}-{sum(1 for w in self.workers if w.queue == q)}" for q in pools}
        with ThreadPoolExecutor(len(pools)) as ex:
            futures = {q: ex.submit(start_worker, q, env, dirs[q], c) for q, c in pools.items()}
        started: dict[str, Worker] = {}
        errors: list[BaseException] = []
        for q, f in futures.items():
            try:
                started[q] = f.result()
            except Exception as exc:
                errors.append(exc)
        self.workers += started.values()  # stopped by close(), even if another failed to start
        if errors:
            raise errors[0]
        return started

    def worker_logs(self) -> str:
        return "\n".join(f"--- {w.log_path}\n{w.log()}" for w in self.workers)

    def close(self) -> None:
        stop_workers(self.workers)
        release_clients(self.redis.url, self.broker_url)
        self.redis.close()
        if self.vhost is not None:
            self.vhost.delete()


@contextlib.contextmanager
def open_rig(
    tmp_path: Path, a: FakeServerProcess, b: FakeServerProcess, *, appendonly: bool = False
) -> Iterator[Rig]:
    a.reset()
    b.reset()
    vhost = Vhost() if BROKER == "amqp" else None
    private = PrivateRedis(tmp_path / "redis", appendonly=appendonly)
    private.start()
    rig = Rig(private, a, b, tmp_path / "workers", vhost)
    try:
        yield rig
    finally:
        a.reset()  # also wakes requests still hanging
        b.reset()
        rig.close()


@pytest.fixture
def rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b) as r:
        yield r


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def chat_requests(server: FakeServerProcess, match: str | None = None) -> list[dict[str, Any]]:
    entries = [e for e in server.log() if str(e["path"]).endswith("/chat/completions")]
    if match is not None:
        entries = [e for e in entries if match in str(e["messages"])]
    return entries


def in_flight(server: FakeServerProcess, match: str | None = None) -> list[dict[str, Any]]:
    """Requests the server is still working on (delayed or hanging)."""
    return [e for e in chat_requests(server, match) if e["duration"] is None]


def content_words(text: str) -> list[str]:
    """The spoken words, without speaker labels (a turn split across chunks repeats its label)."""
    return normalize_words("\n".join(re.sub(r"^[^:\n]{1,40}:\s", "", line) for line in text.splitlines()))


def transcript(lines: int, marker: dict[int, str] | None = None) -> str:
    """A transcript of distinct speaker lines; `marker` puts a unique word into chosen lines."""
    speakers = ("Ann", "Bob", "Cleo")
    out = []
    for i in range(lines):
        extra = f" {marker[i]}" if marker and i in marker else ""
        out.append(f"{speakers[i % 3]}: line {i} we talk about item number {i} and its plan{extra}")
    return "\n".join(out) + "\n"


def n_chunks(job: Job) -> int:
    return job.store.meta(job.id).n_chunks


def assert_complete_once(result: JobResult, source: str, n: int) -> None:
    """Success, every chunk present exactly once and in order, no word lost or doubled."""
    assert result.status == "SUCCESS", result.error
    assert [c.index for c in result.chunks] == list(range(n))
    assert result.enhanced_text is not None
    assert content_words(result.enhanced_text) == content_words(source)


def no_message_left(rig: Rig) -> bool:
    """Nothing waiting in the queues and nothing delivered but unacknowledged."""
    if rig.vhost is not None:
        queues = rig.vhost.queues()
        unacked = sum(queues.get(q, (0, 0))[1] for q in ("enhance", "summary"))
        return rig.vhost.ready("enhance", "summary") == (0, 0) and unacked == 0
    c = rig.client
    return c.llen("enhance") + c.llen("summary") + c.hlen("unacked") == 0


def maie_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`maie ARGS` as its own process."""
    maie = Path(sys.executable).parent / "maie"
    return subprocess.run(
        [str(maie), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


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
