"""Job state in Redis (the result backend's Redis): chunk texts in, chunk results and the job result out.

Task arguments carry only ids (job id, chunk index), never transcript text: the dashboard shows task
arguments, and Redis holds the text. Every write is keyed by job and chunk (HSET, SET), so a task
that is redelivered or runs twice overwrites its own result instead of adding a second one.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

__all__ = ["JobStore"]

PREFIX = "maie:job:"


@lru_cache(maxsize=8)
def _client(url: str, patient: bool = False) -> redis.Redis:
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


class JobStore:
    def __init__(self, url: str, ttl_seconds: int, *, patient: bool = False) -> None:
        self.redis: redis.Redis = _client(url, patient)
        self.ttl = ttl_seconds

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{PREFIX}{job_id}{':' + part if part else ''}"

    # -- creation ------------------------------------------------------------------------------
    def create(self, job_id: str, meta: dict[str, Any], chunks: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(job_id), mapping={k: json.dumps(v) for k, v in meta.items()})
        if chunks:
            pipe.hset(self._key(job_id, "raw"), mapping={str(i): t for i, t in enumerate(chunks)})
        for part in ("", "raw"):
            pipe.expire(self._key(job_id, part), self.ttl)
        pipe.execute()

    def exists(self, job_id: str) -> bool:
        # The fields written at creation, not just the key: a task finishing after Redis lost the
        # job (a restart without persistence) may write a stray field, which is no job.
        return bool(self.redis.hexists(self._key(job_id), "n_chunks"))

    def meta(self, job_id: str) -> dict[str, Any]:
        raw = self.redis.hgetall(self._key(job_id))
        return {str(k): json.loads(v) for k, v in raw.items()}

    def set_meta(self, job_id: str, **fields: Any) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._key(job_id), mapping={k: json.dumps(v) for k, v in fields.items()})
        pipe.expire(self._key(job_id), self.ttl)
        pipe.execute()

    # -- chunks --------------------------------------------------------------------------------
    def raw_chunk(self, job_id: str, index: int) -> str | None:
        value = self.redis.hget(self._key(job_id, "raw"), str(index))
        return value if value is None else str(value)

    def raw_chunks(self, job_id: str) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.redis.hgetall(self._key(job_id, "raw")).items()}

    def put_enhanced(self, job_id: str, index: int, record: dict[str, Any]) -> None:
        key = self._key(job_id, "enhanced")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, str(index), json.dumps(record, ensure_ascii=False))
        pipe.expire(key, self.ttl)
        pipe.execute()

    def enhanced(self, job_id: str) -> dict[int, dict[str, Any]]:
        raw = self.redis.hgetall(self._key(job_id, "enhanced"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def enhanced_one(self, job_id: str, index: int) -> dict[str, Any] | None:
        raw = self.redis.hget(self._key(job_id, "enhanced"), str(index))
        return None if raw is None else dict(json.loads(raw))

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
        key = self._key(job_id, "partials")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, f"{level}:{group}", json.dumps(record, ensure_ascii=False))
        pipe.expire(key, self.ttl)
        pipe.execute()

    def partials(self, job_id: str, level: int | None = None) -> dict[int, dict[str, Any]]:
        """The notes of one level by group, or with level None every level's, numbered in order."""
        raw = self.redis.hgetall(self._key(job_id, "partials"))
        records = {tuple(int(p) for p in str(k).split(":")): json.loads(v) for k, v in raw.items()}
        if level is not None:
            return {g: r for (lv, g), r in records.items() if lv == level}
        return {i: records[k] for i, k in enumerate(sorted(records))}

    def put_result(self, job_id: str, result_json: str) -> None:
        self.redis.set(self._key(job_id, "result"), result_json, ex=self.ttl)

    def result(self, job_id: str) -> str | None:
        value = self.redis.get(self._key(job_id, "result"))
        return None if value is None else str(value)

    def put_error(self, job_id: str, error: dict[str, Any]) -> bool:
        """Record why the job failed; the first failure wins (later ones are its consequences)."""
        return bool(self.redis.set(self._key(job_id, "error"), json.dumps(error), ex=self.ttl, nx=True))

    def error(self, job_id: str) -> dict[str, Any] | None:
        value = self.redis.get(self._key(job_id, "error"))
        return None if value is None else dict(json.loads(str(value)))

    def count_delivery(self, job_id: str, attempt: str) -> int:
        """Count one more delivery of a task attempt (e.g. "chunk 3:0") and return how many so far."""
        key = self._key(job_id, "deliveries")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, attempt, 1)
        pipe.expire(key, self.ttl)
        return int(pipe.execute()[0])

    def cancel(self, job_id: str) -> None:
        # The first cancellation's time stays: cancelling twice does not move when the job ended.
        self.redis.set(self._key(job_id, "cancelled"), repr(time.time()), ex=self.ttl, nx=True)

    def cancelled(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id, "cancelled")))

    def cancelled_at(self, job_id: str) -> float | None:
        value = self.redis.get(self._key(job_id, "cancelled"))
        try:
            return None if value is None else float(value)
        except ValueError:  # marked by an older release, without its time
            return None

    # -- idempotent submission -----------------------------------------------------------------
    def claim_idempotency_key(self, key: str, job_id: str) -> str | None:
        """Bind `key` to `job_id`; returns the job already bound to it, if any."""
        name = f"maie:idem:{key}"
        if self.redis.set(name, job_id, nx=True, ex=self.ttl):
            return None
        existing = self.redis.get(name)
        return None if existing is None else str(existing)
