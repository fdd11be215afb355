"""Where a job's enhance version comes from: each chunk's record, else (older jobs) the job's record."""

from __future__ import annotations

import redis
from conftest import REDIS_URL

from maie.job_meta import JobMeta
from maie.result import build_result
from maie.store import JobStore

VERSION = {
    "backend": "vllm_server",
    "base_url": "http://127.0.0.1:1/v1",
    "model": "m",
    "prompt_sha256": "0" * 64,
    "decoding": "constrained",
}


def _record(index: int, **extra: object) -> dict[str, object]:
    return {
        "index": index,
        "text": f"Chunk {index}.",
        "degraded": False,
        "edit_rate": 0.0,
        "attempts": 1,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "seconds": 0.1,
        "started_at": 1.0,
        "finished_at": 2.0,
        **extra,
    }


def test_the_version_is_read_from_the_chunk_records(fresh_redis: redis.Redis) -> None:
    st = JobStore(REDIS_URL, 60)
    meta = JobMeta(features=["enhance"], n_chunks=2, template_id=None)
    st.create("job-v1", meta, ["chunk 0", "chunk 1"])
    for i in range(2):
        st.put_enhanced("job-v1", i, _record(i, version=VERSION))
    result = build_result("job-v1", st.meta("job-v1"), st.enhanced("job-v1"))
    assert result.versions["enhance"].model_dump() == {**VERSION, "schema_sha256": None}
    # Nothing is written to the job's own record per chunk any more.
    assert st.meta("job-v1").version_enhance is None
    assert "version_enhance" not in st.redis.hkeys("maie:job:job-v1")


def test_a_job_written_by_an_earlier_release_keeps_its_version(fresh_redis: redis.Redis) -> None:
    st = JobStore(REDIS_URL, 60)
    older = {k: v for k, v in VERSION.items() if k != "decoding"}
    meta = JobMeta(features=["enhance"], n_chunks=1, template_id=None, version_enhance=older)
    st.create("job-v0", meta, ["chunk 0"])
    st.put_enhanced("job-v0", 0, _record(0))
    result = build_result("job-v0", st.meta("job-v0"), st.enhanced("job-v0"))
    assert result.versions["enhance"].model == "m" and result.versions["enhance"].decoding is None
