"""What several test modules share: the private-Redis rig of the reliability tests, the `maie api`
process, the bad submissions, the operations scripts' Redis and environment, the engine tier's job,
and small polling and log helpers. Fixtures defined here are imported by the modules that use them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import redis
from brokers import BROKER, Vhost, redis_depth
from conftest import REDIS_URL, ROOT, Worker, base_env, clean_redis, dual_env, start_worker
from fakes.process import ManagedProcess, free_port
from fakes.server_process import FakeServerProcess

from maie import Job, JobResult, submit
from maie.enhance import normalize_words
from maie.lanes import with_lanes
from maie.settings import Settings, load_settings

SCRIPTS = ROOT / "scripts"

# -- the reliability tests' rig: a private Redis, fake servers A and B, workers -------------------


class PrivateRedis(ManagedProcess):
    """A redis-server of the test's own on 127.0.0.1, optionally persisted in an append-only file."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self._clients: list[redis.Redis] = []
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        # appendfsync always: every write Redis acknowledged is on disk before a SIGKILL.
        cmd += (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        )
        cmd += ["--dir", str(self.dir)]
        super().__init__(f"redis-server on port {self.port}", cmd, self.dir / "redis.log", append=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> Self:
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            return super().start().wait_ready(lambda: _pings(probe), timeout, poll=0.05)
        finally:
            probe.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        super().stop(sig, timeout)

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


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


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
        unacked = sum(queues.get(q, (0, 0))[1] for q in with_lanes(["enhance", "summary"]))
        return rig.vhost.ready("enhance", "summary") == (0, 0) and unacked == 0
    c = rig.client
    return redis_depth(c, "enhance", "summary") + c.hlen("unacked") == 0


def maie_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`maie ARGS` as its own process."""
    maie = Path(sys.executable).parent / "maie"
    return subprocess.run(
        [str(maie), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


# -- the HTTP API as users start it (`maie api`, a uvicorn subprocess) -----------------------------

KEY = "test-api-key-0123456789abcdef0123456789"


class ApiServer(ManagedProcess):
    """`maie api --port P` in its own process, with `env`; stop() ends it (SIGTERM)."""

    def __init__(self, env: dict[str, str], workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        maie = str(Path(sys.executable).parent / "maie")
        cmd = [maie, "api", "--host", "127.0.0.1", "--port", str(self.port), *args]
        super().__init__("maie api", cmd, workdir / "api.out", env=env, cwd=workdir)
        self.start()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request never
        # goes out on a connection the server is closing at that moment.
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=60,
            headers={"X-API-Key": KEY},
            limits=httpx.Limits(keepalive_expiry=1.0),
        )

    def wait_ready(self, timeout: float = 90) -> Self:  # type: ignore[override]
        return super().wait_ready(self._answers, timeout)

    def _answers(self) -> bool:
        try:
            return self.client.get("/openapi.json").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        self.client.close()
        super().stop(sig, timeout)

    def wait_status(self, task_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        """Poll GET /v1/status until the job's status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/v1/status/{task_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {task_id} still {body['status']} after {timeout} s: {body}")
            time.sleep(0.1)


# -- polling HTTP endpoints ---------------------------------------------------------------------


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def poll(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout} s")


# -- malformed submissions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One malformed submission: a file (name, bytes), or stdin, plus options and environment."""

    id: str
    content: bytes | None = None
    name: str = "t.txt"
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes | None = None
    expect: str = ""  # a fragment of the one-line message


GOOD = b"Ann: hello there\nBob: hi\n"
BAD_INPUTS = [
    Bad("empty-file", b"", expect="empty"),
    Bad("whitespace-only", b"  \n\t \n", expect="blank"),
    Bad("nul-bytes", b"Ann: hello\x00world\n", expect="NUL"),
    Bad("invalid-utf8", b"Ann: caf\xe9 au lait\n", expect="UTF-8"),
    Bad("control-characters", b"\x01\x02\x03\x04 binary \x05\x06", expect="control"),
    Bad("over-max-input-bytes", b"word " * 400, env={"MAX_INPUT_BYTES": "1000"}, expect="1000"),
    Bad("json-segments-not-a-list", b'{"segments": 3}', name="t.json", expect="segments"),
    Bad("json-list-of-numbers", b"[1, 2, 3]", name="t.json", expect="segment"),
    Bad("json-cut-short", b'{"segments": [{"text": "hi"', name="t.json", expect="JSON"),
    Bad(
        "json-negative-timestamp",
        b'{"segments": [{"start": -1.5, "end": 2.0, "text": "hi"}]}',
        name="t.json",
        expect="negative",
    ),
    Bad(
        "json-reversed-timestamps",
        b'{"segments": [{"start": 5.0, "end": 1.0, "text": "hi"}]}',
        name="t.json",
        expect="before it starts",
    ),
    Bad("srt-reversed-cue", b"1\n00:00:05,000 --> 00:00:01,000\nhello\n", name="t.srt", expect="before"),
    Bad("srt-broken-timing", b"1\n00:00:xx,000 --> 00:00:01,000\nhello\n", name="t.srt", expect="SRT"),
    Bad(
        "vtt-reversed-cue", b"WEBVTT\n\n00:00:05.000 --> 00:00:01.000\nhello\n", name="t.vtt", expect="before"
    ),
    Bad("vtt-broken-timing", b"WEBVTT\n\n00:00:0x.000 --> 00:00:01.000\nhello\n", name="t.vtt", expect="VTT"),
    Bad("unknown-template", GOOD, args=("--template", "no_such_template"), expect="unknown template"),
    Bad("template-id-with-dots", GOOD, args=("--template", "../etc/passwd"), expect="invalid template id"),
    Bad("template-id-absolute-path", GOOD, args=("--template", "/etc/passwd"), expect="invalid template id"),
    Bad("unknown-feature", GOOD, args=("--features", "enhance,translate"), expect="unknown feature"),
    Bad("no-feature", GOOD, args=("--features", ","), expect="no feature"),
    Bad("directory", None, name="a-directory", expect="directory"),
    Bad("missing-file", None, name="missing.txt", expect="missing.txt"),
    Bad("empty-stdin", stdin=b"", expect="empty"),
]


# -- the operations scripts, on a Redis of their own ----------------------------------------------


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
    server = shutil.which("redis-server")
    if server is None:
        yield REDIS_URL.rsplit("/", 1)[0] + "/12"
        return
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)


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


# -- the engine tier: a template with short bounded fields, worker settings, a job ----------------

TRANSCRIPT = (
    "Anna: so the budget for the new remote is twenty euros\n"
    "Ben: and we ship it in may with a yellow case\n"
    "Anna: okay ben will call the factory on monday\n"
)

# One chunk for constrained enhancement: speaker labels, English and Vietnamese, a mark already there.
CONSTRAINED_CHUNK = (
    "Anna: so the budget for the new remote is twenty euros, right\n"
    "Minh: đúng vậy and we ship it in may with a yellow case"
)

# A template with short bounded fields: a random model fills strings up to their maxLength.
TINY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "x-language": "en",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "decided": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["title", "decided", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module", name="templates_dir")
def templates_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("templates")
    bundle = root / "tiny_notes"
    bundle.mkdir()
    (bundle / "schema.json").write_text(json.dumps(TINY_SCHEMA, indent=2))
    (bundle / "example.json").write_text(json.dumps({"title": "Budget", "decided": True, "tags": ["x"]}))
    (bundle / "prompt.jinja").write_text(
        "Summarise the transcript as JSON matching this schema:\n{{ schema_json }}\n\n"
        "Transcript:\n{{ transcript }}\n"
    )
    return root


def engine_env(templates: Path, **extra: str) -> dict[str, str]:
    return base_env(
        HF_HUB_OFFLINE="1",
        TEMPLATES_DIR=str(templates),
        LLM_ENHANCE__MAX_MODEL_LEN="1024",
        LLM_SUM__MAX_MODEL_LEN="2048",
        LLM_ENHANCE__ENFORCE_EAGER="true",
        LLM_SUM__ENFORCE_EAGER="true",
        LLM_SUM__MAX_TOKENS="256",
        LLM_SERVER__REQUEST_TIMEOUT_SECONDS="120",
        **extra,
    )


def run_job(templates: Path, **kwargs: Any) -> JobResult:
    settings = load_settings(env_file=None, templates_dir=templates)
    return submit(TRANSCRIPT, template_id="tiny_notes", settings=settings, **kwargs).wait(timeout=300)
