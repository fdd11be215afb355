"""Jobs through real worker processes, each pool holding its own in-process vLLM engine on CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import redis
from conftest import Worker, clean_redis, meeting_of, start_worker
from helpers import TINY_SCHEMA, engine_env, run_job, templates_dir_fixture  # noqa: F401

from maie import submit
from maie.enhance import normalize_words
from maie.settings import load_settings
from maie.store import JobStore
from maie.templates import load_template


# -- local_vllm: an engine inside each pool ------------------------------------------------------
@pytest.fixture(scope="module")
def local_pools(
    redis_client: redis.Redis,
    tiny_model_dir: Path,
    templates_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Worker]]:
    clean_redis(redis_client)
    log_dir = tmp_path_factory.mktemp("local-pools")
    env = engine_env(
        templates_dir,
        LLM_BACKEND="local_vllm",
        LLM_ENHANCE__MODEL=str(tiny_model_dir),
        LLM_SUM__MODEL=str(tiny_model_dir),
        LLM_ENHANCE__MAX_NUM_SEQS="8",
        LLM_SUM__MAX_NUM_SEQS="4",
    )
    # One core each: two engines left to vLLM's automatic binding would share one core.
    workers = {
        "enhance": start_worker("enhance", {**env, "VLLM_CPU_OMP_THREADS_BIND": "0"}, log_dir, 8),
        "summary": start_worker("summary", {**env, "VLLM_CPU_OMP_THREADS_BIND": "1"}, log_dir, 4),
    }
    yield workers
    for w in workers.values():
        w.stop(timeout=60)


def test_local_engines_run_a_job_with_a_schema_valid_summary(
    local_pools: dict[str, Worker], templates_dir: Path, fresh_redis: redis.Redis
) -> None:
    result = run_job(templates_dir)
    assert result.status == "SUCCESS", result.error
    jsonschema.validate(result.summary, TINY_SCHEMA)
    assert result.enhanced_text is not None
    versions = result.versions
    assert versions["enhance"].backend == versions["summary"].backend == "local_vllm"
    assert load_template("tiny_notes", templates_dir).schema == TINY_SCHEMA


def test_each_pool_loads_its_engine_once_across_jobs(
    local_pools: dict[str, Worker], templates_dir: Path, fresh_redis: redis.Redis
) -> None:
    for _ in range(2):
        result = run_job(templates_dir)
        assert result.status == "SUCCESS", result.error
    for queue, worker in local_pools.items():
        text = worker.log() + _app_log(worker)
        loads = [line for line in worker.log().splitlines() if "LLM engine loaded" in line]
        assert len(loads) == 1, (queue, loads)
        assert f"task={queue}" in loads[0]
        assert f"LLM {queue} bound" in text


def _app_log(worker: Worker) -> str:
    path = Path(worker.env["LOG_DIR"]) / "app.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(1800)  # long meetings: minutes of work, more on a loaded machine
def test_meetings_of_500_to_30000_words_through_local_engines(
    local_pools: dict[str, Worker], templates_dir: Path, fresh_redis: redis.Redis
) -> None:
    """The `local_vllm` column of the long-meeting matrix: engines with a 1,024-token enhancement
    context and a 2,048-token summary context. CHUNK_MAX_TOKENS (512) is clamped to what the
    enhancement context holds, and the longer meetings are summarised through levels of notes."""
    meetings = {n: meeting_of(n) for n in (500, 10_000, 30_000)}
    settings = load_settings(env_file=None, templates_dir=templates_dir)
    jobs = {n: submit(text, template_id="tiny_notes", settings=settings) for n, text in meetings.items()}
    store = JobStore(settings.celery_result_backend, 3600)
    for n, job in jobs.items():
        result = job.wait(timeout=1200)
        assert result.status == "SUCCESS", (n, result.error)
        jsonschema.validate(result.summary, TINY_SCHEMA)
        assert result.enhanced_text is not None
        # The tiny model's words are noise, so chunks stay raw (degraded): still every word, in order.
        assert normalize_words(result.enhanced_text) == normalize_words(meetings[n])
        if n >= 10_000:
            assert store.meta(job.id).summary_levels >= 1

