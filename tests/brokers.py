"""The broker the integration tests run on: Redis (default) or RabbitMQ (`MAIE_TEST_BROKER=amqp`).

On RabbitMQ every test session, and every test that starts pools with settings of its own, gets a
virtual host of its own, created and deleted with `rabbitmqctl`: concurrent sessions on one machine
never share queues (not even Celery's delayed-delivery queues), and a test never takes another
test's tasks. Virtual hosts left by a session that died are removed by the next one (their names
carry the owning pid). RabbitMQ itself: MAIE_TEST_AMQP (default amqp://guest:guest@127.0.0.1:5672).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from typing import Any

BROKER = os.environ.get("MAIE_TEST_BROKER", "redis").strip().lower() or "redis"
if BROKER not in ("redis", "amqp"):
    raise RuntimeError(f"MAIE_TEST_BROKER must be redis or amqp, not {BROKER!r}")
AMQP_BASE = os.environ.get("MAIE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672").rstrip("/")
VHOST_PREFIX = "maie-test-"
_counter = itertools.count()


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise RuntimeError(
            "MAIE_TEST_BROKER=amqp needs rabbitmqctl (on PATH, with the rights to run it) to give "
            "each test session a virtual host of its own"
        )
    # On a loaded machine the CLI's own Erlang node sometimes fails to reach RabbitMQ's: try again.
    for attempt in range(3):
        proc = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(1 + attempt)
    raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout}")


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine still runs (a session that owns a DB or a vhost)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_vhosts() -> None:
    """Delete the virtual hosts of test sessions whose process is gone."""
    for entry in json.loads(rabbitmqctl("list_vhosts", "--formatter", "json", "name") or "[]"):
        name = str(entry["name"])
        if not name.startswith(VHOST_PREFIX):
            continue
        owner = name[len(VHOST_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            rabbitmqctl("delete_vhost", name)


class Vhost:
    """A RabbitMQ virtual host of this process's own; `url` is a broker URL for it."""

    def __init__(self) -> None:
        self.name = f"{VHOST_PREFIX}{os.getpid()}-{next(_counter)}"
        user = AMQP_BASE.split("://", 1)[1].split(":", 1)[0].split("@", 1)[0] or "guest"
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, user, ".*", ".*", ".*")
        self.url = f"{AMQP_BASE}/{self.name}"

    def ready(self, *pools: str) -> tuple[int, ...]:
        """Each pool's ready messages (its queue and short lane), now (a passive declare;
        rabbitmqctl's counts lag)."""
        from kombu import Connection

        from maie.broker import amqp_queue_depths
        from maie.lanes import with_lanes

        with Connection(self.url) as conn:
            depths = amqp_queue_depths(conn, with_lanes(pools))
        return tuple(sum(depths[q] for q in with_lanes([p])) for p in pools)

    def queues(self) -> dict[str, tuple[int, int]]:
        """Each queue's (ready, unacknowledged) message counts, as of RabbitMQ's last statistics
        (emitted every few seconds: poll)."""
        out = rabbitmqctl(
            "list_queues", "-p", self.name, "--formatter", "json", "name", "messages_ready",
            "messages_unacknowledged",
        )
        return {
            str(q["name"]): (int(q["messages_ready"]), int(q["messages_unacknowledged"]))
            for q in json.loads(out or "[]")
        }

    def purge(self, *pools: str) -> None:
        from maie.lanes import with_lanes

        present = self.queues()
        for name in with_lanes(pools):
            if name in present:
                rabbitmqctl("purge_queue", "-p", self.name, name)

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


def redis_depth(client: Any, *pools: str) -> int:
    """Messages waiting on the Redis broker for `pools`, their short lanes included (maie.lanes)."""
    from maie.lanes import with_lanes

    return sum(int(client.llen(q)) for q in with_lanes(pools))
