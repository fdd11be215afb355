"""The reconciler: no job hangs silently, whatever the broker loses.

A broker can lose a message (Redis with `appendfsync everysec` loses the last second of writes in a
crash; an operator purges a queue). A lost chunk task leaves its chord one short, and the job waits
forever. Every worker pool runs this check in a thread of its own, one pool at a time (a Redis
lock), so nothing extra has to be started:

- a job that made no progress for `JOB_STALL_SECONDS` (no task started, no LLM call began or
  ended, no retry due) and whose queue has moved past it (emptied, or started a task of a newer
  job) is missing a task;
- exactly the chunk tasks without a stored result are sent again, or, once every chunk is in, the
  final task (summary or assembly); chunk results are keyed by index and the final task does
  nothing for a job that has its result, so a late original does no harm;
- after `JOB_MAX_REDISPATCHES` rounds the job fails with `job_stalled`, naming what went missing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError

from maie.canvas import chunk_task_id
from maie.lanes import is_short, lane
from maie.names import ASSEMBLE, ENHANCE_CHUNK, KEY_PREFIX, SUMMARIZE, TASK_QUEUES
from maie.result import JobError
from maie.settings import Settings
from maie.store import JobStore

__all__ = ["Reconciler", "Missing", "start_reconciler", "stop_reconciler"]

log = logging.getLogger("maie.reconcile")

LOCK = f"{KEY_PREFIX}reconciler:lock"


@dataclass(frozen=True)
class Missing:
    """What a job is waiting for: chunk tasks, or its final task."""

    chunks: list[int]
    final: str | None  # SUMMARIZE | ASSEMBLE | None
    short: bool = False  # the job's tasks go to the short lanes (maie.lanes)

    @property
    def queue(self) -> str:
        return lane("enhance" if self.chunks else "summary", self.short)

    def describe(self) -> str:
        if self.chunks:
            return f"chunk task(s) {', '.join(map(str, self.chunks))}"
        return "the summary task" if self.final == SUMMARIZE else "the final assembly task"


def missing(store: JobStore, job_id: str, settings: Settings) -> Missing | None:
    """What the job still needs, or None if it has ended or is gone."""
    if store.result(job_id) is not None or store.error(job_id) is not None or store.cancelled(job_id):
        return None
    if not store.exists(job_id):
        return None
    meta = store.meta(job_id)
    if meta.waits_for_recognition:
        return None  # still being recognised: its chunks do not exist yet (not reconciled here)
    final = SUMMARIZE if "summary" in meta.features else ASSEMBLE
    short = is_short(meta.n_chunks, settings)
    if meta.enhanced_chunks:
        done = store.enhanced(job_id)
        chunks = [i for i in range(meta.enhanced_chunks) if i not in done]
        if chunks:
            return Missing(chunks, final, short)
    return Missing([], final, short)


class Reconciler:
    """One round of checks over the jobs that have gone quiet."""

    def __init__(self, app: Celery, settings: Settings, store: JobStore) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.owner = uuid.uuid4().hex

    @property
    def interval(self) -> float:
        return max(0.5, min(30.0, self.settings.job_stall_seconds / 4))

    def run_once(self, now: float | None = None) -> list[str]:
        """Check every quiet job; returns what was done, one line per action (for logs and tests)."""
        now = time.time() if now is None else now
        actions: list[str] = []
        for job_id in self.store.redispatched():
            actions += self._finish_redispatched(job_id)
        for job_id in self.store.quiet_since(now - self.settings.job_stall_seconds):
            actions += self._check(job_id, now)
        return actions

    def _finish_redispatched(self, job_id: str) -> list[str]:
        # A job whose chord lost a chunk: its chord never fires, so its final task is sent here as
        # soon as every chunk is in, instead of after another quiet period.
        need = missing(self.store, job_id, self.settings)
        if need is None:
            self.store.forget_active(job_id)
            return []
        if need.chunks or need.final is None:
            return []
        if not self.store.claim(job_id, "final-sent"):
            return []
        self.store.touch(job_id)
        self._send(need.final, job_id, need, redispatch=1)
        return [f"{job_id}: every chunk is in; sent {need.describe()}"]

    def _check(self, job_id: str, now: float) -> list[str]:
        need = missing(self.store, job_id, self.settings)
        if need is None:
            self.store.forget_active(job_id)
            return []
        created = self.store.created_at(job_id) or 0.0
        if not self._queue_passed(need.queue, created):
            return []  # its tasks may still be waiting behind older work
        quiet = now - (self.store.last_progress(job_id) or now)
        rounds = self.store.meta(job_id).redispatches + 1
        if rounds > self.settings.job_max_redispatches:
            stage = "enhance" if need.chunks else "summary" if need.final == SUMMARIZE else "enhance"
            message = (
                f"no progress for {quiet:.0f} s: {need.describe()} never completed, although sent "
                f"again {rounds - 1} time(s) (JOB_MAX_REDISPATCHES={self.settings.job_max_redispatches}); "
                "were their messages lost by the broker, or is no worker consuming queue "
                f"{need.queue}?"
            )
            error = JobError(stage=stage, code="job_stalled", message=message)
            self.store.put_error(job_id, error.model_dump())
            log.error("job %s failed: %s", job_id, message)
            return [f"{job_id}: failed: {message}"]
        self.store.set_meta(job_id, redispatches=rounds)
        self.store.touch(job_id, now)
        if need.chunks:
            self.store.mark_redispatched(job_id)
            for index in need.chunks:
                self._send(ENHANCE_CHUNK, job_id, need, redispatch=rounds, index=index)
        else:
            assert need.final is not None
            self._send(need.final, job_id, need, redispatch=rounds)
        line = f"{job_id}: no progress for {quiet:.0f} s; sent {need.describe()} again (round {rounds})"
        log.warning("job %s: no progress for %.0f s; sending %s again", job_id, quiet, need.describe())
        return [line]

    def _queue_passed(self, queue: str, created_at: float) -> bool:
        """Has `queue` moved past a job created at `created_at`: a task of a newer job started
        from it, or it holds nothing? Queues are first in, first out."""
        head = self.store.head(queue)
        if head is not None and head > created_at:
            return True
        try:
            with self.app.connection_for_write() as conn:
                channel: Any = conn.default_channel  # kombu's channel types omit queue_declare
                declared = channel.queue_declare(queue, passive=True)
            return int(declared.message_count) == 0
        except ChannelError as exc:
            # Redis drops an emptied list, and AMQP knows no queue nobody declared: either way
            # nothing waits in it. Any other answer: look again next round.
            return "not_found" in str(exc).lower() or "no queue" in str(exc).lower()
        except Exception as exc:  # broker trouble: look again next round
            log.debug("cannot read the depth of queue %s: %s", queue, exc)
            return False

    def _send(
        self, name: str, job_id: str, need: Missing, *, redispatch: int, index: int | None = None
    ) -> None:
        kwargs: dict[str, object] = {"job_id": job_id, "redispatch": redispatch}
        if index is not None:
            kwargs["index"] = index
        task_id = chunk_task_id(job_id, index) if index is not None else job_id
        queue = lane(TASK_QUEUES[name], need.short)
        self.app.signature(name, kwargs=kwargs).apply_async(task_id=task_id, queue=queue)


_thread: threading.Thread | None = None
_stop = threading.Event()


def _loop(reconciler: Reconciler) -> None:
    while not _stop.wait(reconciler.interval):
        try:
            # One pool reconciles per interval; the lock expires on its own if this one dies.
            lock_seconds = max(1, int(reconciler.interval))
            if not reconciler.store.redis.set(LOCK, reconciler.owner, nx=True, ex=lock_seconds):
                continue
            for line in reconciler.run_once():
                log.info("reconciler: %s", line)
        except Exception as exc:  # Redis restarting, broker away: try again next round
            log.warning("reconciler round failed: %s", exc)


def start_reconciler(app: Celery, settings: Settings, store: JobStore) -> None:
    """Start this process's reconciler thread (once)."""
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(
        target=_loop, args=(Reconciler(app, settings, store),), name="maie-reconciler", daemon=True
    )
    _thread.start()


def stop_reconciler() -> None:
    _stop.set()
