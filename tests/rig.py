"""The reliability tests' rig: a redis-server of the test's own, fake servers A (enhance) and B
(summary), and real worker processes on demand; and how a test lets go of the rig's Redis."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import redis
from brokers import BROKER, Vhost, redis_depth
from conftest import Worker, dual_env, start_worker
from fakes.process import ManagedProcess, free_port, stop_all
from fakes.server_process import FakeServerProcess
from kombu import pools as kombu_pools

from maie.lanes import with_lanes
from maie.settings import Settings, load_settings


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
        # kombu keeps producer and connection pools per broker URL for the whole process: forget
        # the closed ones, or a later rig whose Redis gets the same port would be handed them.
        conn = app.connection_for_write()
        for group in (kombu_pools.producers, kombu_pools.connections):
            with contextlib.suppress(KeyError):
                del group[conn]
    for patient in (False, True):
        redis_client(url, patient).connection_pool.disconnect()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


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
        stop_all(self.workers)
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


def no_message_left(rig: Rig) -> bool:
    """Nothing waiting in the queues and nothing delivered but unacknowledged."""
    if rig.vhost is not None:
        queues = rig.vhost.queues()
        unacked = sum(queues.get(q, (0, 0))[1] for q in with_lanes(["enhance", "summary"]))
        return rig.vhost.ready("enhance", "summary") == (0, 0) and unacked == 0
    c = rig.client
    return redis_depth(c, "enhance", "summary") + c.hlen("unacked") == 0
