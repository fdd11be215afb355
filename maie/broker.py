"""The broker behind CELERY_BROKER_URL, Redis or RabbitMQ: its queues and how many tasks wait in them.

Redis (`redis://`, `rediss://`): one list per queue; a delivered message is acknowledged by
deleting its copy in the `unacked` hash, and a message whose worker vanished comes back after the
visibility timeout.

RabbitMQ (`amqp://`, `amqps://`): durable quorum queues, replicated when RabbitMQ is clustered. An
unacknowledged message comes back as soon as its worker's connection closes (no visibility
timeout). Celery's requirements for quorum queues: no global QoS (`worker_detect_quorum_queues`,
on by default, turns it off when it finds them) and, for retry countdowns, RabbitMQ's native
delayed delivery, which Celery routes through topic exchanges only; so each queue is bound to the
topic exchange `maie` under its own name. The result backend and the job store stay on Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from kombu import Exchange, Queue

__all__ = [
    "AMQP_SCHEMES",
    "is_amqp",
    "task_queues",
    "transport_options",
    "amqp_queue_depths",
    "declare_amqp_queues",
    "guard_closed_redis_channels",
]

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
EXCHANGE = "maie"


def is_amqp(url: str) -> bool:
    """Whether the broker URL names RabbitMQ (an AMQP broker) rather than Redis."""
    return urlsplit(url).scheme.lower() in AMQP_SCHEMES


def task_queues(url: str, names: Iterable[str]) -> tuple[Queue, ...]:
    if not is_amqp(url):
        return tuple(Queue(name) for name in names)
    exchange = Exchange(EXCHANGE, type="topic", durable=True)
    return tuple(
        Queue(name, exchange, routing_key=name, durable=True, queue_arguments={"x-queue-type": "quorum"})
        for name in names
    )


def transport_options(url: str, visibility: int) -> dict[str, Any]:
    """kombu's transport options for the broker (`broker_transport_options`)."""
    if is_amqp(url):
        # Publisher confirms: apply_async returns once RabbitMQ holds the message (Celery's advice
        # for quorum queues), so a job that `submit` reports queued is queued.
        return {"confirm_publish": True}
    return {
        "visibility_timeout": visibility,
        # Unacknowledged messages (their worker died) are swept back to their queue every
        # `unacked_restore_interval` s once older than the visibility timeout; kombu's default
        # sweep (every 100 s) would leave them waiting far longer than a short timeout.
        "unacked_restore_interval": max(1, min(60, visibility // 10)),
        "unacked_restore_throttle": 1,
        # The sweep holds a Redis mutex; a worker killed while holding it must not block the
        # sweeps of the others for kombu's default 5 minutes when the timeout is short.
        "unacked_mutex_expire": min(300, max(10, visibility // 2)),
    }


def amqp_queue_depths(connection: Any, names: Iterable[str]) -> dict[str, int]:
    """Messages waiting (ready, not yet delivered) in each RabbitMQ queue, over an open connection.

    A passive declare reports a queue's ready messages without creating it; a queue that no
    worker or sender has declared yet holds none. (Redis: the length of the queue's list.)
    """
    depths: dict[str, int] = {}
    for name in names:
        channel = connection.channel()
        try:
            depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
        except connection.channel_errors:  # 404 NOT_FOUND closes the channel: never declared
            depths[name] = 0
        finally:
            try:
                channel.close()
            except connection.channel_errors + connection.connection_errors:
                pass
    return depths


def declare_amqp_queues(connection: Any, queues: Iterable[Queue]) -> None:
    """Declare every MAIE queue on RabbitMQ, not only the ones this worker consumes.

    At start-up Celery binds *all* the app's queues to the delayed-delivery exchange; a queue not
    declared yet makes that binding fail ("Native delayed delivery will not be available"), and a
    retry countdown sent to that queue would then be routed nowhere: lost.
    """
    channel = connection.channel()
    try:
        for queue in queues:
            queue.bind(channel).declare()
    finally:
        channel.close()


def guard_closed_redis_channels() -> None:
    """Make kombu's Redis channel fail with a connection error, not AttributeError, once closed.

    Workaround for a kombu bug of the kombu#582 family ("'NoneType' object has no attribute
    'hostname'" in `_connparams`), seen with Celery/kombu 5.7.0: when Redis dies while a worker
    holds unacknowledged messages, Celery's consumer first `collect()`s the broken connection,
    which releases the transport while the channel's close fails half-way (returning the
    unacknowledged messages needs Redis), then `close()`s it, which closes that channel again and
    reads the released transport's URL: AttributeError. It is not a connection error, so the
    consumer stops with "Unrecoverable error" and the worker exits 1; the same happens to a late
    acknowledgement on that channel. As a connection error it is ignored like the others, the
    worker reconnects, and the messages return after the visibility timeout (tasks are
    idempotent). Installing it twice is harmless.
    """
    import redis
    from kombu.transport import redis as kombu_redis

    original = getattr(kombu_redis.Channel, "_connparams")  # noqa: B009 - private, untyped
    if getattr(original, "maie_guard", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, "maie_guard", True)  # noqa: B010
    setattr(kombu_redis.Channel, "_connparams", _connparams)  # noqa: B010
