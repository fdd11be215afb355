"""Shared fixtures: a real Redis DB of the tests' own, fake OpenAI servers, real worker processes.

Workers are started the way users start them (`celery -A maie worker -Q enhance`), as separate
processes with their settings in the environment; nothing here runs Celery in eager mode.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import brokers  # noqa: E402
from fakes.process import ManagedProcess  # noqa: E402
from fakes.server_process import FakeServerProcess  # noqa: E402


def _claim_redis_db(base: str = "redis://127.0.0.1:6379") -> str:
    """A Redis DB index no other live test session on this machine uses (1-11; 12-15 are kept
    for tests and benchmarks that need one of their own). Two suites at once never share queues."""
    for db in range(1, 12):
        client = redis.Redis.from_url(f"{base}/{db}")
        try:
            owner = client.get("maie:test-owner")
            if owner is not None and brokers.pid_alive(int(owner)) and int(owner) != os.getpid():
                continue
            client.set("maie:test-owner", os.getpid(), ex=6 * 3600)
            return f"{base}/{db}"
        except redis.ConnectionError:
            return f"{base}/1"  # redis_client reports the missing server
        finally:
            client.close()
    raise RuntimeError("no free Redis DB index for the tests (1-11 are all held by live sessions)")


REDIS_URL = os.environ.get("MAIE_TEST_REDIS") or _claim_redis_db()
# The broker: the same Redis DB, or with MAIE_TEST_BROKER=amqp a RabbitMQ virtual host of this
# session's own (tests/brokers.py). The result backend and the job store are Redis either way.
SESSION_VHOST: brokers.Vhost | None = None
if brokers.BROKER == "amqp":
    brokers.remove_stale_vhosts()
    SESSION_VHOST = brokers.Vhost()
BROKER_URL = SESSION_VHOST.url if SESSION_VHOST is not None else REDIS_URL
# The test process's settings (read on first use): its Celery app and job store use the tests' broker and DB.
os.environ["CELERY_BROKER_URL"] = BROKER_URL
os.environ["CELERY_RESULT_BACKEND"] = REDIS_URL
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under tests/integration and tests/engine carry their tier's marker automatically.
    # On RabbitMQ only the tests marked `broker` run: the others look into Redis' queues.
    redis_only = pytest.mark.skip(reason="runs on the Redis broker only (not marked `broker`)")
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
            if brokers.BROKER == "amqp" and item.get_closest_marker("broker") is None:
                item.add_marker(redis_only)
        if f"{os.sep}engine{os.sep}" in path:
            item.add_marker(pytest.mark.engine)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if SESSION_VHOST is not None:
        SESSION_VHOST.delete()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts without MAIE variables from the developer's shell or a stray .env."""
    for name in list(os.environ):
        if name.startswith(("LLM_", "CHUNK_", "ENHANCE_", "QUEUE_", "TASK_", "LOG_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not answering at {REDIS_URL}: start redis-server (scripts/test.sh does)")
    yield client
    client.close()


def clean_redis(client: redis.Redis) -> None:
    """Forget jobs, results and queued messages; keep kombu's bindings that running workers use."""
    patterns = ("maie:job:*", "maie:idem:*", "maie:endpoint:*", "celery-task-meta-*", "chord-unlock-*")
    patterns += ("*.counter",)
    client.delete("maie:active", "maie:redispatched", "maie:heads")  # the reconciler's watch
    for pattern in patterns:
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
    for queue in ("enhance", "summary", "asr", "enhance.short", "summary.short"):
        client.delete(queue)


def clean_broker() -> None:
    """On RabbitMQ, empty the session's queues (on Redis, clean_redis did)."""
    if SESSION_VHOST is not None:
        SESSION_VHOST.purge("enhance", "summary")


@pytest.fixture
def fresh_redis(redis_client: redis.Redis) -> redis.Redis:
    clean_redis(redis_client)
    clean_broker()
    return redis_client


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLM_", "CELERY_", "CHUNK_", "ENHANCE_", "QUEUE_", "TASK_"))
    }
    env.update(
        CELERY_BROKER_URL=BROKER_URL,
        CELERY_RESULT_BACKEND=REDIS_URL,
        LLM_SERVER__REQUEST_TIMEOUT_SECONDS="10",
        TASK_RETRY_BACKOFF_MAX="1",
        TASK_MAX_RETRIES="3",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Worker(ManagedProcess):
    """`celery -A maie worker -Q <queue>` as a real process, as users start it, with `env` (its
    LOG_DIR set to `log_dir`, where it runs and writes its output, worker-<queue>.out)."""

    def __init__(self, queue: str, env: dict[str, str], log_dir: Path, concurrency: int = 4) -> None:
        celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"
        cmd = [
            celery,
            "-A",
            "maie",
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "-n",
            f"{queue}-{os.getpid()}-{time.monotonic_ns()}@%h",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        env = {**env, "LOG_DIR": str(log_dir)}
        super().__init__(f"worker {queue}", cmd, log_dir / f"worker-{queue}.out", env=env, cwd=log_dir)
        self.queue = queue
        self.env: dict[str, str] = env


def start_worker(
    queue: str, env: dict[str, str], log_dir: Path, concurrency: int = 4, ready_timeout: float = 60
) -> Worker:
    """A `Worker`, started; returns once it is ready."""
    return Worker(queue, env, log_dir, concurrency).start().wait_logged(" ready.", ready_timeout)


@pytest.fixture(scope="session")
def server_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServerProcess]:
    with FakeServerProcess(name="A", model="enhance-model", api_key="sk-test-enhance-key") as s:
        yield s


@pytest.fixture(scope="session")
def server_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServerProcess]:
    with FakeServerProcess(name="B", model="summary-model", api_key="sk-test-summary-key") as s:
        yield s


def dual_env(a: FakeServerProcess, b: FakeServerProcess, **extra: str) -> dict[str, str]:
    return base_env(
        LLM_BACKEND="vllm_server",
        LLM_SERVER__ENHANCE_BASE_URL=a.base_url,
        LLM_SERVER__ENHANCE_API_KEY="sk-test-enhance-key",
        LLM_SERVER__ENHANCE_MODEL_NAME="enhance-model",
        LLM_SERVER__SUMMARY_BASE_URL=b.base_url,
        LLM_SERVER__SUMMARY_API_KEY="sk-test-summary-key",
        LLM_SERVER__SUMMARY_MODEL_NAME="summary-model",
        **extra,
    )


@pytest.fixture(scope="module")
def dual_workers(
    redis_client: redis.Redis,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Worker]]:
    """An enhance pool bound to server A and a summary pool bound to server B.

    Module-scoped: they stop at the end of the module, so a module that starts pools of its own
    (other settings, same queues) never has these take its tasks.
    """
    clean_redis(redis_client)
    clean_broker()
    log_dir = tmp_path_factory.mktemp("dual-workers")
    env = dual_env(server_a, server_b)
    workers = {q: start_worker(q, env, log_dir) for q in ("enhance", "summary")}
    yield workers
    for w in workers.values():
        w.stop()


@pytest.fixture
def dual(
    dual_workers: dict[str, Worker],
    fresh_redis: redis.Redis,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Worker]:
    """The dual-endpoint pools, with the fake servers reset and this process's settings matching."""
    server_a.reset()
    server_b.reset()
    for k, v in dual_env(server_a, server_b).items():
        if k.startswith(("LLM_", "CELERY_", "TASK_")):
            monkeypatch.setenv(k, v)
    return dual_workers


def load_jsonl(name: str) -> list[dict[str, object]]:
    import json

    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def meeting_of(words: int) -> str:
    """A transcript of about `words` words: whole turns of the shared AMI meetings, in order, the
    meetings repeated as often as needed (1-3 hour meetings run 8,000-30,000 words)."""
    turns = [
        line for item in load_jsonl("summary_dev.jsonl") for line in str(item["transcript"]).splitlines()
    ]
    out: list[str] = []
    count = 0
    while count < words:
        out.append(turns[len(out) % len(turns)])
        count += len(out[-1].split())
    return "\n".join(out)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 model with a ChatML template, built once per session (seconds)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may ever be fetched from a model hub
    from maie.devmodel import build_tiny_model

    model_dir = tmp_path_factory.mktemp("models") / "tiny-qwen2"
    build_tiny_model(model_dir)
    return model_dir
