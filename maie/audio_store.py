"""Audio and recognition records of a job in Redis, next to its other records (maie/store.py).

    maie:job:<id>:audio      the uploaded recording, as submitted (bytes)
    maie:job:<id>:pcm        part index → 16 kHz mono s16 samples of that part (bytes)
    maie:job:<id>:asr-parts  part index → its recognised segments and timings (JSON)
    maie:job:<id>:asr        the stitched raw transcript, metrics and versions (JSON; JobStore)

Task arguments carry only ids; the audio travels through Redis. Writes are keyed by job and part,
so a redelivered task overwrites its own record. The recording and its samples are dropped once the
transcript exists: they are the bulk of a job's memory in Redis.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from maie.store import PREFIX, indexed_records, put_record

__all__ = ["AudioStore"]


@lru_cache(maxsize=8)
def _binary_client(url: str) -> redis.Redis:
    # The job store's client decodes replies as text; audio needs raw bytes. Same patience on
    # a Redis restart as the job store's worker client.
    return redis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class AudioStore:
    def __init__(self, url: str, ttl_seconds: int) -> None:
        self.redis: redis.Redis = _binary_client(url)
        self.ttl = ttl_seconds

    def _key(self, job_id: str, part: str) -> str:
        return f"{PREFIX}{job_id}:{part}"

    def put_audio(self, job_id: str, data: bytes) -> None:
        self.redis.set(self._key(job_id, "audio"), data, ex=self.ttl)

    def audio(self, job_id: str) -> bytes | None:
        value = self.redis.get(self._key(job_id, "audio"))
        return None if value is None else cast(bytes, value)

    def put_pcm(self, job_id: str, parts: list[bytes]) -> None:
        key = self._key(job_id, "pcm")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        if parts:
            pipe.hset(key, mapping={str(i): p for i, p in enumerate(parts)})
        pipe.expire(key, self.ttl)
        pipe.execute()

    def pcm(self, job_id: str, index: int) -> bytes | None:
        value = self.redis.hget(self._key(job_id, "pcm"), str(index))
        return None if value is None else cast(bytes, value)

    def put_part(self, job_id: str, index: int, record: dict[str, Any]) -> None:
        put_record(self.redis, self._key(job_id, "asr-parts"), str(index), record, self.ttl)

    def parts(self, job_id: str) -> dict[int, dict[str, Any]]:
        return indexed_records(self.redis, self._key(job_id, "asr-parts"))

    def parts_done(self, job_id: str) -> int:
        return int(self.redis.hlen(self._key(job_id, "asr-parts")))

    def drop_audio(self, job_id: str) -> None:
        self.redis.delete(self._key(job_id, "audio"), self._key(job_id, "pcm"))
