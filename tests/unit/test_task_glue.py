"""The glue around the LLM logic: retry decisions, task descriptions and failure records.

The retry policy is pure; the failure record is written to the tests' Redis by the same
`on_failure` the workers run.
"""

from __future__ import annotations

import pytest
import redis
from scripted_backend import ScriptedBackend

from maie.enhance import EnhancedChunk, enhance_chunk_text
from maie.errors import BackendRejected, BackendUnavailable
from maie.job_meta import JobMeta
from maie.result import build_result
from maie.retry import GiveUp, Retry, RetryPolicy
from maie.settings import load_settings
from maie.task_base import store
from maie.tasks import enhance_chunk, partial_notes_task, summarize

POLICY = RetryPolicy(deadline_seconds=900, max_retries=None, backoff_cap=60)


def test_backoff_grows_and_stays_under_its_cap() -> None:
    waits = {n: max(POLICY.decide(spent=0, failures=n).countdown for _ in range(200)) for n in (1, 3, 8)}  # type: ignore[union-attr]
    assert waits[1] <= 1 < waits[3] <= 4 < waits[8] <= 60


def test_the_cap_is_the_time_left_near_the_deadline() -> None:
    decision = POLICY.decide(spent=898, failures=10)
    assert isinstance(decision, Retry) and decision.countdown <= 2


def test_past_the_deadline_the_task_gives_up_naming_the_setting() -> None:
    assert POLICY.decide(spent=900, failures=2) == GiveUp("TASK_RETRY_DEADLINE_SECONDS=900")


def test_a_count_bound_ends_retries_before_the_deadline() -> None:
    counted = RetryPolicy(deadline_seconds=900, max_retries=3, backoff_cap=60)
    assert isinstance(counted.decide(spent=5, failures=3), Retry)
    assert counted.decide(spent=5, failures=4) == GiveUp("TASK_MAX_RETRIES=3")


def test_a_cooling_endpoint_is_waited_for_without_counting_a_failure() -> None:
    counted = RetryPolicy(deadline_seconds=900, max_retries=0, backoff_cap=60)
    decision = counted.decide(spent=5, failures=None, cooling_down_for=20)
    assert isinstance(decision, Retry) and 20 <= decision.countdown <= 60


def test_the_policy_follows_the_settings_and_the_visibility_timeout() -> None:
    s = load_settings(env_file=None, task_retry_backoff_max=600, task_max_retries=2)
    policy = RetryPolicy.from_settings(s, visibility_timeout=300)
    assert policy == RetryPolicy(deadline_seconds=900, max_retries=2, backoff_cap=150)


@pytest.mark.parametrize(
    ("task", "kwargs", "expected"),
    [
        (enhance_chunk, {"job_id": "j", "index": 7}, "chunk 7"),
        (summarize, {"job_id": "j"}, "summary of level 0"),
        (summarize, {"job_id": "j", "level": 2}, "summary of level 2"),
        (partial_notes_task, {"job_id": "j", "group": 3, "start": 0, "end": 4}, "notes 1-3"),
    ],
)
def test_each_task_says_what_it_works_on(task: object, kwargs: dict[str, object], expected: str) -> None:
    task.push_request(kwargs=kwargs)  # type: ignore[attr-defined]
    try:
        assert task.describe() == expected  # type: ignore[attr-defined]
    finally:
        task.pop_request()  # type: ignore[attr-defined]


def test_a_chunk_kept_raw_is_a_failed_degraded_record_in_the_result() -> None:
    backend = ScriptedBackend([BackendRejected("400: bad request")])
    with pytest.raises(BackendRejected):
        enhance_chunk_text(backend, 1, "so um we start", load_settings(env_file=None).llm_enhance, 0.3)
    kept = EnhancedChunk.kept_raw(1, "so um we start", "chunk 1: 400: bad request", attempts=2).to_json()
    done = EnhancedChunk(0, "Hello.", False, 0.0, 1, 5, 2, 0.1).to_json()
    for i, record in enumerate((done, kept)):
        record.update(started_at=1.0 + i, finished_at=2.0 + i)
    meta = JobMeta(features=["enhance"], n_chunks=2)
    result = build_result("job", meta, {0: done, 1: kept})
    assert result.enhanced_text == "Hello.\nso um we start"
    chunk = result.chunks[1]
    assert (chunk.failed, chunk.degraded, chunk.edit_rate, chunk.attempts) == (True, True, None, 2)
    assert chunk.error == "chunk 1: 400: bad request"
    assert result.metrics["enhance"].prompt_tokens == 5


def test_a_final_failure_is_recorded_against_its_job_with_stage_code_and_chunk(
    fresh_redis: redis.Redis,
) -> None:
    exc = BackendUnavailable("connection refused (gave up after 900 s of retries)")
    enhance_chunk.on_failure(exc, "job-x-enhance-4", (), {"job_id": "job-x", "index": 4}, None)
    error = store().error("job-x")
    assert error is not None
    assert (error["stage"], error["code"], error["chunk"]) == ("enhance", "backend_unavailable", 4)
    assert error["message"] == str(exc)
