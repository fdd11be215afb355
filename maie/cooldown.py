"""One cooldown per LLM endpoint, shared in Redis by every task of every pool that calls it.

When a call to an endpoint fails in a way a retry can help (refused, reset, timeout, 429, 5xx), the
endpoint is marked down for a cooldown that doubles with each failed probe, up to
`TASK_RETRY_BACKOFF_MAX`. While it is down, tasks do not call it: they retry after the cooldown.
Once the cooldown is over, one task at a time probes it (a Redis lock); the first success clears
the mark and every task calls it again. A vLLM server that takes minutes to load its model thus
sees one request per cooldown, not one per waiting task.

    Redis  maie:endpoint:<sha>        hash  url, since, until, failures, error
           maie:endpoint:<sha>:probe  the probe lock (expires after one request timeout)

`GuardedBackend` wraps a backend with the cooldown (every call that reaches the endpoint: completions,
token counts, model discovery) and reports each finished completion as progress of its job.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis

from maie.backends.base import Completion, LLMBackend, Message
from maie.errors import BackendUnavailable
from maie.names import KEY_PREFIX

__all__ = ["EndpointCoolingDown", "EndpointDown", "Cooldown", "GuardedBackend"]

log = logging.getLogger("maie.llm")

T = TypeVar("T")

# A task that finds another one probing waits this long (plus jitter) before it looks again.
PROBE_WAIT_SECONDS = 2.0


class EndpointCoolingDown(BackendUnavailable):
    """The endpoint is known down: the call was not made. Retry after `retry_after` seconds."""

    code = "backend_unavailable"

    def __init__(self, message: str, retry_after: float = PROBE_WAIT_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class EndpointDown:
    """What is known about an endpoint marked down."""

    url: str
    since: float
    until: float
    failures: int
    error: str

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        started = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.url} down for {now - self.since:.0f} s (since {started}; last error: {self.error})"


class Cooldown:
    """The shared cooldown of one endpoint."""

    def __init__(self, client: redis.Redis, url: str, *, cap_seconds: float, probe_ttl: float) -> None:
        self.redis = client
        self.url = url
        self.cap = max(1.0, cap_seconds)
        self.probe_ttl = max(1, int(probe_ttl) + 5)
        sha = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.key = f"{KEY_PREFIX}endpoint:{sha}"
        self.probe_key = f"{self.key}:probe"

    def state(self) -> EndpointDown | None:
        raw = self.redis.hgetall(self.key)
        if not raw or "since" not in raw:
            return None
        return EndpointDown(
            url=str(raw.get("url", self.url)),
            since=float(raw["since"]),
            until=float(raw.get("until", 0)),
            failures=int(raw.get("failures", 0)),
            error=str(raw.get("error", "")),
        )

    def enter(self) -> bool:
        """May this task call the endpoint now? Returns whether the call is the probe; raises
        EndpointCoolingDown when it must wait."""
        down = self.state()
        if down is None:
            return False
        now = time.time()
        if now < down.until:
            raise EndpointCoolingDown(
                f"{down.describe(now)}; cooling down, next probe in {down.until - now:.0f} s",
                retry_after=down.until - now,
            )
        if self.redis.set(self.probe_key, "1", nx=True, ex=self.probe_ttl):
            return True
        raise EndpointCoolingDown(f"{down.describe(now)}; another task is probing it")

    def failed(self, exc: BackendUnavailable, probe: bool) -> None:
        """Record a failed call. A first failure or a failed probe (re)starts the cooldown, longer
        each time; failures of calls that were already under way when it went down only add
        their message."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(self.key)
        pipe.hset(self.key, mapping={"url": self.url, "error": str(exc)[:300]})
        pipe.hsetnx(self.key, "since", now)
        existed = bool(pipe.execute()[0])
        if probe or not existed:
            failures = int(self.redis.hincrby(self.key, "failures", 1))
            cooldown = min(self.cap, 2.0 ** (failures - 1))
            self.redis.hset(self.key, "until", now + cooldown)
            if not existed:
                log.warning("LLM endpoint %s marked down: %s", self.url, exc)
        # Kept well beyond any retry deadline; a success deletes it.
        self.redis.expire(self.key, 7 * 86400)
        if probe:
            self.redis.delete(self.probe_key)

    def succeeded(self, probe: bool) -> None:
        down = self.state()
        if down is not None:
            self.redis.delete(self.key)
            log.warning("LLM endpoint %s is back after %.0f s down", self.url, time.time() - down.since)
        if probe:
            self.redis.delete(self.probe_key)


class GuardedBackend:
    """A backend whose calls to its endpoint (completions, token counts, model discovery) go
    through the endpoint's cooldown, when it has one, and report progress of the job (`touch`)."""

    def __init__(
        self, inner: LLMBackend, cooldown: Cooldown | None, touch: Callable[[], None] | None = None
    ) -> None:
        self.inner = inner
        self.cooldown = cooldown
        self._touch = touch or (lambda: None)
        # Once a call went through (here, or by this process's backend for an earlier task), the
        # model and its context are known: reading them again (for a reply budget, the result's
        # versions, metrics) needs no call, and neither meets nor reads the cooldown.
        self._known = inner.discovered

    def _call(self, call: Callable[[], T]) -> T:
        if self.cooldown is None:
            result = call()
            self._known = True
            return result
        probe = self.cooldown.enter()
        try:
            result = call()
        except EndpointCoolingDown:
            raise
        except BackendUnavailable as exc:
            self.cooldown.failed(exc, probe)
            raise
        except Exception:
            # Any other outcome (a rejection, a bad key) means the endpoint answered.
            if probe:
                self.cooldown.succeeded(probe)
            raise
        if probe:
            # Only a probe can find the endpoint back: while it is marked down no other call is made.
            self.cooldown.succeeded(probe)
        self._known = True
        return result

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def task(self) -> str:
        return self.inner.task

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    @property
    def model(self) -> str:
        return self.inner.model if self._known else self._call(lambda: self.inner.model)

    @property
    def max_model_len(self) -> int:
        return self.inner.max_model_len if self._known else self._call(lambda: self.inner.max_model_len)

    @property
    def discovered(self) -> bool:
        return self._known

    def discover(self) -> None:
        self._call(self.inner.discover)

    def count_tokens(self, text: str) -> int | None:
        return self._call(lambda: self.inner.count_tokens(text))

    def close(self) -> None:
        self.inner.close()

    def chat(self, messages: Sequence[Message], **kwargs: Any) -> Completion:
        # Progress is marked when a call ends, not also as it starts: the task marked its start.
        try:
            return self._call(lambda: self.inner.chat(messages, **kwargs))
        finally:
            self._touch()
