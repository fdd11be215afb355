"""Job state in Redis (the result backend's Redis): chunk texts in, chunk results and the job result out.

Task arguments carry only ids (job id, chunk index), never transcript text: the dashboard shows task
arguments, and Redis holds the text. Every write is keyed by job and chunk (HSET, SET), so a task
that is redelivered or runs twice overwrites its own result instead of adding a second one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from maie.job_meta import JobMeta
from maie.names import JOB_PREFIX, KEY_PREFIX

__all__ = [
    "JobStore",
    "JobRecords",
    "redis_client",
    "put_record",
    "queue_record",
    "indexed_records",
    "ACTIVE",
    "REDISPATCHED",
    "ChunkOpening",
]

PREFIX = JOB_PREFIX
# Jobs not yet ended, scored by when they last made progress (or are next expected to: a retry
# countdown's end). The reconciler (maie.reconcile) reads it; an ended job leaves it.
ACTIVE = f"{KEY_PREFIX}active"
# Jobs whose chord lost a chunk task: their final task is sent by the reconciler, not the chord.
REDISPATCHED = f"{KEY_PREFIX}redispatched"
# Per queue: the creation time of the newest job a task of which has started from that queue.
HEADS = f"{KEY_PREFIX}heads"


@lru_cache(maxsize=8)
def redis_client(url: str, patient: bool = False) -> redis.Redis:
    # One connection pool per URL and process, shared by every JobStore and Job handle.
    if patient:
        # Workers: a Redis restart (a deploy, a crash with an append-only file) must not fail the
        # chunk that is being written; reconnect and retry for about half a minute first.
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    return redis.Redis.from_url(url, decode_responses=True)


@dataclass(frozen=True)
class ChunkOpening:
    """What a chunk task reads as it starts (JobStore.open_chunk)."""

    cancelled: bool
    done: dict[str, Any] | None  # its record, when an earlier delivery already stored it
    deliveries: int  # deliveries of this attempt so far, this one included
    raw: str | None  # the chunk's text; None once the job has expired


# Per process: job id -> creation time, which never changes; the task that starts a job's chunk
# notes it for its queue (note_head) without reading it again for every chunk.
_created_at: dict[str, float] = {}
_CREATED_AT_KEPT = 4096


class JobRecords(Protocol):
    """What a `Job` handle reads and writes of its job: the Python API needs no more of a store."""

    def exists(self, job_id: str) -> bool: ...
    def meta(self, job_id: str) -> JobMeta: ...
    def enhanced_count(self, job_id: str) -> int: ...
    def raw_chunks(self, job_id: str) -> dict[int, str]: ...
    def result(self, job_id: str) -> str | None: ...
    def error(self, job_id: str) -> dict[str, Any] | None: ...
    def cancelled(self, job_id: str) -> bool: ...
    def cancelled_at(self, job_id: str) -> float | None: ...
    def cancel(self, job_id: str) -> None: ...


def put_record(client: redis.Redis, key: str, field: str, record: dict[str, Any], ttl: int) -> None:
    """One JSON record under `field` of the hash `key`, whose whole hash lives `ttl` more seconds."""
    pipe = client.pipeline(transaction=True)
    queue_record(pipe, key, field, record, ttl)
    pipe.execute()


def queue_record(pipe: Any, key: str, field: str, record: dict[str, Any], ttl: int) -> None:
    """`put_record`'s commands, queued on `pipe` for a caller that sends more in the same round trip."""
    pipe.hset(key, field, json.dumps(record, ensure_ascii=False))
    pipe.expire(key, ttl)


def indexed_records(client: redis.Redis, key: str) -> dict[int, dict[str, Any]]:
    """The JSON records of the hash `key`, by their integer field (a chunk's or a part's index)."""
    return {int(k): json.loads(v) for k, v in client.hgetall(key).items()}


class JobStore:
    def __init__(self, url: str, ttl_seconds: int, *, patient: bool = False) -> None:
        self.redis: redis.Redis = redis_client(url, patient)
        self.ttl = ttl_seconds

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{PREFIX}{job_id}{':' + part if part else ''}"

    # -- creation ------------------------------------------------------------------------------
    def create(self, job_id: str, meta: JobMeta, chunks: list[str]) -> None:
        """The job's metadata (the fields set on `meta`) and its chunk texts."""
        self.put_chunks(job_id, chunks, **meta.model_dump(exclude_unset=True))

    def put_chunks(self, job_id: str, chunks: list[str], **fields: Any) -> None:
        """The job's chunk texts, with the metadata fields they come with, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(job_id), mapping={k: json.dumps(v) for k, v in fields.items()})
        if chunks:
            pipe.hset(self._key(job_id, "raw"), mapping={str(i): t for i, t in enumerate(chunks)})
        for part in ("", "raw"):
            pipe.expire(self._key(job_id, part), self.ttl)
        pipe.execute()

    def delete(self, job_id: str) -> None:
        """Forget a job that was never queued (its canvas could not be sent)."""
        parts = ("", "raw", "enhanced", "partials", "result", "error", "deliveries", "retries")
        self.redis.delete(*(self._key(job_id, p) for p in parts))
        self._ended(job_id)

    def exists(self, job_id: str) -> bool:
        # The fields written at creation, not just the key: a task finishing after Redis lost the
        # job (a restart without persistence) may write a stray field, which is no job.
        return bool(self.redis.hexists(self._key(job_id), "n_chunks"))

    def created_at(self, job_id: str) -> float | None:
        value = self.redis.hget(self._key(job_id), "created_at")
        return None if value is None else float(json.loads(str(value)))

    def meta(self, job_id: str) -> JobMeta:
        raw = self.redis.hgetall(self._key(job_id))
        return JobMeta.model_validate({str(k): json.loads(v) for k, v in raw.items()})

    def set_meta(self, job_id: str, **fields: Any) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(job_id), mapping={k: json.dumps(v) for k, v in fields.items()})
        pipe.expire(self._key(job_id), self.ttl)
        pipe.execute()

    # -- chunks --------------------------------------------------------------------------------
    def raw_chunks(self, job_id: str) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.redis.hgetall(self._key(job_id, "raw")).items()}

    def put_enhanced(self, job_id: str, index: int, record: dict[str, Any]) -> None:
        put_record(self.redis, self._key(job_id, "enhanced"), str(index), record, self.ttl)

    def enhanced(self, job_id: str) -> dict[int, dict[str, Any]]:
        return indexed_records(self.redis, self._key(job_id, "enhanced"))

    def enhanced_count(self, job_id: str) -> int:
        return int(self.redis.hlen(self._key(job_id, "enhanced")))

    # -- recognition (audio jobs; the audio itself is in maie/audio_store.py) -------------------
    def put_raw_transcript(self, job_id: str, record: dict[str, Any]) -> None:
        self.redis.set(self._key(job_id, "asr"), json.dumps(record, ensure_ascii=False), ex=self.ttl)

    def raw_transcript(self, job_id: str) -> dict[str, Any] | None:
        value = self.redis.get(self._key(job_id, "asr"))
        return None if value is None else dict(json.loads(str(value)))

    # -- outcome -------------------------------------------------------------------------------
    def put_partial(self, job_id: str, level: int, group: int, record: dict[str, Any]) -> None:
        """Notes of one group at one level of a long transcript's summary (level 1: of chunks)."""
        put_record(self.redis, self._key(job_id, "partials"), f"{level}:{group}", record, self.ttl)

    def partials(self, job_id: str, level: int | None = None) -> dict[int, dict[str, Any]]:
        """The notes of one level by group, or with level None every level's, numbered in order."""
        raw = self.redis.hgetall(self._key(job_id, "partials"))
        records = {tuple(int(p) for p in str(k).split(":")): json.loads(v) for k, v in raw.items()}
        if level is not None:
            return {g: r for (lv, g), r in records.items() if lv == level}
        return {i: records[k] for i, k in enumerate(sorted(records))}

    def put_result(self, job_id: str, result_json: str) -> None:
        self.redis.set(self._key(job_id, "result"), result_json, ex=self.ttl)
        self._ended(job_id)

    def result(self, job_id: str) -> str | None:
        value = self.redis.get(self._key(job_id, "result"))
        return None if value is None else str(value)

    def put_error(self, job_id: str, error: dict[str, Any]) -> bool:
        """Record why the job failed; the first failure wins (later ones are its consequences)."""
        first = bool(self.redis.set(self._key(job_id, "error"), json.dumps(error), ex=self.ttl, nx=True))
        self._ended(job_id)
        return first

    def error(self, job_id: str) -> dict[str, Any] | None:
        value = self.redis.get(self._key(job_id, "error"))
        return None if value is None else dict(json.loads(str(value)))

    # -- a task's start and a chunk's end, one round trip each --------------------------------------
    def start(self, job_id: str, attempt: str, queue: str | None) -> int:
        """A task of the job starts from `queue`: count this delivery of its attempt (returned), mark
        the job's progress and note the queue's head (for the reconciler)."""
        pipe = self.redis.pipeline(transaction=False)
        finish = self._queue_start(pipe, job_id, attempt, queue)
        return finish(pipe.execute())

    def open_chunk(self, job_id: str, index: int, attempt: str, queue: str | None) -> ChunkOpening:
        """`start` for a chunk task, with what it reads first (cancelled? stored already? its
        text), in the same round trip. Counting a delivery of a chunk already stored or of a
        cancelled job is harmless: the task ends before the count is looked at."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self._key(job_id, "cancelled"))
        pipe.hget(self._key(job_id, "enhanced"), str(index))
        pipe.hget(self._key(job_id, "raw"), str(index))
        finish = self._queue_start(pipe, job_id, attempt, queue)
        replies = pipe.execute()
        done = replies[1]
        return ChunkOpening(
            cancelled=bool(replies[0]),
            done=None if done is None else dict(json.loads(done)),
            deliveries=finish(replies[3:]),
            raw=None if replies[2] is None else str(replies[2]),
        )

    def finish_chunk(
        self, job_id: str, index: int, record: dict[str, Any], also: Callable[[Any], None] | None = None
    ) -> None:
        """Store a chunk's record and mark the job's progress; `also(pipe)` adds more commands (the
        metrics) to the same round trip."""
        pipe = self.redis.pipeline(transaction=False)
        queue_record(pipe, self._key(job_id, "enhanced"), str(index), record, self.ttl)
        pipe.zadd(ACTIVE, {job_id: time.time()}, xx=True, gt=True)
        if also is not None:
            also(pipe)
        pipe.execute()

    def _queue_start(
        self, pipe: Any, job_id: str, attempt: str, queue: str | None
    ) -> Callable[[list[Any]], int]:
        """Queue `start`'s commands on `pipe`; returns what turns their replies into the count."""
        deliveries = self._key(job_id, "deliveries")
        pipe.hincrby(deliveries, attempt, 1)
        pipe.expire(deliveries, self.ttl)
        pipe.zadd(ACTIVE, {job_id: time.time()}, xx=True, gt=True)
        created = _created_at.get(job_id)
        if queue is not None and created is not None:
            pipe.zadd(HEADS, {queue: created}, gt=True)
        elif queue is not None:
            pipe.hget(self._key(job_id), "created_at")

        def finish(replies: list[Any]) -> int:
            if queue is not None and created is None and len(replies) > 3 and replies[3] is not None:
                # First task of this job in this process: one more round trip, then remembered.
                value = float(json.loads(str(replies[3])))
                if len(_created_at) >= _CREATED_AT_KEPT:
                    _created_at.clear()
                _created_at[job_id] = value
                self.note_head(queue, value)
            return int(replies[0])

        return finish

    def cancel(self, job_id: str) -> None:
        # The first cancellation's time stays: cancelling twice does not move when the job ended.
        self.redis.set(self._key(job_id, "cancelled"), repr(time.time()), ex=self.ttl, nx=True)
        self._ended(job_id)

    def cancelled(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id, "cancelled")))

    def cancelled_at(self, job_id: str) -> float | None:
        value = self.redis.get(self._key(job_id, "cancelled"))
        try:
            return None if value is None else float(value)
        except ValueError:  # marked by an older release, without its time
            return None

    # -- progress, for the reconciler ------------------------------------------------------------
    def touch(self, job_id: str, at: float | None = None) -> None:
        """The job made progress now (or is expected to at `at`, the end of a retry countdown).
        Never moves a job's mark back; a job that has ended is not brought back."""
        at = time.time() if at is None else at
        self.redis.zadd(ACTIVE, {job_id: at}, xx=True, gt=True)

    def activate(self, job_id: str) -> None:
        self.redis.zadd(ACTIVE, {job_id: time.time()})

    def _ended(self, job_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(ACTIVE, job_id)
        pipe.srem(REDISPATCHED, job_id)
        pipe.execute()

    def quiet_since(self, before: float, limit: int = 500) -> list[str]:
        """Jobs that have not ended and made no progress after `before`."""
        return [str(j) for j in self.redis.zrangebyscore(ACTIVE, "-inf", before, start=0, num=limit)]

    def last_progress(self, job_id: str) -> float | None:
        score = self.redis.zscore(ACTIVE, job_id)
        return None if score is None else float(score)

    def forget_active(self, job_id: str) -> None:
        self._ended(job_id)

    def mark_redispatched(self, job_id: str) -> None:
        self.redis.sadd(REDISPATCHED, job_id)

    def redispatched(self) -> list[str]:
        return [str(j) for j in self.redis.smembers(REDISPATCHED)]

    def claim(self, job_id: str, what: str) -> bool:
        """True once per (job, what): for actions that must happen only once."""
        return bool(self.redis.set(self._key(job_id, f"claim:{what}"), "1", nx=True, ex=self.ttl))

    def note_head(self, queue: str, created_at: float) -> None:
        self.redis.zadd(HEADS, {queue: created_at}, gt=True)

    def head(self, queue: str) -> float | None:
        score = self.redis.zscore(HEADS, queue)
        return None if score is None else float(score)

    def note_retry(self, job_id: str, what: str) -> tuple[float, int]:
        """Count one more failed call of a task (e.g. "chunk 3"); returns (first failure time,
        failed calls so far) of its retries."""
        key = self._key(job_id, "retries")
        raw = self.redis.hget(key, what)
        state = json.loads(str(raw)) if raw is not None else {"since": time.time(), "failures": 0}
        state["failures"] += 1
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, what, json.dumps(state))
        pipe.expire(key, self.ttl)
        pipe.execute()
        return float(state["since"]), int(state["failures"])

    def retry_since(self, job_id: str, what: str) -> float:
        """When a task's retries began (its first failure, or its first wait on a cooldown)."""
        key = self._key(job_id, "retries")
        raw = self.redis.hget(key, what)
        if raw is not None:
            return float(json.loads(str(raw))["since"])
        now = time.time()
        self.redis.hset(key, what, json.dumps({"since": now, "failures": 0}))
        self.redis.expire(key, self.ttl)
        return now

    # -- idempotent submission -----------------------------------------------------------------
    def claim_idempotency_key(self, key: str, job_id: str) -> str | None:
        """Bind `key` to `job_id`; returns the job already bound to it, if any."""
        name = f"{KEY_PREFIX}idem:{key}"
        if self.redis.set(name, job_id, nx=True, ex=self.ttl):
            return None
        existing = self.redis.get(name)
        return None if existing is None else str(existing)

    def release_idempotency_key(self, key: str, job_id: str) -> None:
        """Unbind `key` if it is still bound to `job_id` (a job that could not be queued)."""
        name = f"{KEY_PREFIX}idem:{key}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.watch(name)  # type: ignore[no-untyped-call]
        try:
            if pipe.get(name) == job_id:
                pipe.multi()
                pipe.delete(name)
                pipe.execute()
        except redis.WatchError:
            pass  # rebound meanwhile: not ours to release
        finally:
            pipe.reset()
