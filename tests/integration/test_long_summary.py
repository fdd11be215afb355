"""A transcript many times longer than the summary model's context gets a valid summary, in levels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import redis
from conftest import Worker, base_env, clean_redis, load_jsonl, start_worker
from fakes.server_process import FakeServerProcess

from maie import submit
from maie.chunking import approx_token_count
from maie.settings import load_settings
from maie.store import JobStore
from maie.templates import load_template

CONTEXT = 1024


@pytest.fixture(scope="module")
def small_context(
    redis_client: redis.Redis, server_a: FakeServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeServerProcess, dict[str, Worker]]]:
    clean_redis(redis_client)
    with FakeServerProcess(name="C", model="small-context", max_model_len=CONTEXT) as server_c:
        env = base_env(
            LLM_SERVER__ENHANCE_BASE_URL=server_a.base_url,
            LLM_SERVER__ENHANCE_API_KEY="sk-test-enhance-key",
            LLM_SERVER__ENHANCE_MODEL_NAME="enhance-model",
            LLM_SERVER__SUMMARY_BASE_URL=server_c.base_url,
            LLM_SERVER__SUMMARY_MODEL_NAME="small-context",
            LLM_SUM__MAX_TOKENS="256",
        )
        log_dir = tmp_path_factory.mktemp("small-context")
        workers = {q: start_worker(q, env, log_dir) for q in ("enhance", "summary")}
        yield server_c, workers
        for w in workers.values():
            w.stop()


def test_long_transcript_is_summarised_in_levels(
    small_context: tuple[FakeServerProcess, dict[str, Worker]],
    fresh_redis: redis.Redis,
    server_a: FakeServerProcess,
    tmp_path: Path,
) -> None:
    server_c, _ = small_context
    server_a.reset()
    server_c.reset()
    # 15 times the context: the notes of the first level are themselves too long for one call.
    transcript = "\n".join(str(i["transcript"]) for i in load_jsonl("summary_dev.jsonl"))
    assert approx_token_count(transcript) > 15 * CONTEXT
    settings = load_settings(
        env_file=None,
        llm_server={
            "enhance_base_url": server_a.base_url,
            "enhance_model_name": "enhance-model",
            "summary_base_url": server_c.base_url,
            "summary_model_name": "small-context",
        },
    )
    job = submit(transcript, settings=settings)
    result = job.wait(timeout=300)
    assert result.status == "SUCCESS", result.error
    assert result.summary is not None
    jsonschema.validate(result.summary, load_template("generic_summary").schema)
    calls = [e for e in server_c.log() if str(e["path"]).endswith("/chat/completions")]
    assert all(c["status"] == 200 for c in calls), "a request was refused (too long for the context?)"
    notes = [c for c in calls if not c["has_response_format"]]
    finals = [c for c in calls if c["has_response_format"]]
    assert len(finals) == 1 and calls[-1] is finals[0]
    store = JobStore(settings.celery_result_backend, 3600)
    levels = store.meta(job.id).summary_levels
    assert levels >= 2
    # Each level's notes cover the level below exactly once, in order.
    below = len(result.chunks)
    for level in range(1, levels + 1):
        groups = store.partials(job.id, level)
        spans = [(groups[g]["start"], groups[g]["end"]) for g in range(len(groups))]
        assert spans[0][0] == 0 and spans[-1][1] == below, (level, spans)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        below = len(groups)
    assert len(notes) == sum(len(store.partials(job.id, lv)) for lv in range(1, levels + 1))
