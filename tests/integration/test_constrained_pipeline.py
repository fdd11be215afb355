"""ENHANCE_MODE=constrained end to end: each chunk's pattern reaches the server in vLLM's
`structured_outputs` field, and a server bound by it cannot rewrite what was said."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import Worker, base_env, clean_redis, start_worker
from fakes.server_process import FakeServerProcess

from maie import submit
from maie.enhance import normalize_words
from maie.enhance_regex import words_regex
from maie.settings import load_settings
from maie.store import JobStore

TRANSCRIPT = (
    "Anna: so the budget for the new remote is twenty euros\n"
    "Ben: and we ship it in may with a yellow case\n"
    "Anna: okay ben will call the factory on monday\n"
)


@pytest.fixture(scope="module")
def constrained(
    redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeServerProcess]:
    clean_redis(redis_client)
    with FakeServerProcess(name="R", model="regex-model") as server:
        env = base_env(
            LLM_SERVER__ENHANCE_BASE_URL=server.base_url,
            LLM_SERVER__ENHANCE_MODEL_NAME="regex-model",
            ENHANCE_MODE="constrained",
        )
        log_dir = tmp_path_factory.mktemp("constrained")
        workers: list[Worker] = [start_worker(q, env, log_dir, concurrency=2) for q in ("enhance", "summary")]
        yield server
        for w in workers:
            w.stop()


def test_every_chunk_is_decoded_under_its_own_pattern_and_keeps_every_word(
    constrained: FakeServerProcess, fresh_redis: redis.Redis, tmp_path: Path
) -> None:
    server = constrained
    server.reset()
    # A server answering freely would replace three words in four: the constraint forbids it.
    server.faults({"kind": "rewrite"})
    settings = load_settings(env_file=None, chunk_max_tokens=20)
    job = submit(TRANSCRIPT, features={"enhance"}, settings=settings)
    result = job.wait(timeout=120)
    assert result.status == "SUCCESS", result.error
    assert len(result.chunks) >= 2
    assert not any(c.degraded for c in result.chunks)
    assert result.enhanced_text is not None
    assert normalize_words(result.enhanced_text) == normalize_words(TRANSCRIPT)
    assert result.versions["enhance"].decoding == "constrained"

    st = JobStore(settings.celery_result_backend, 60)
    raw, enhanced = st.raw_chunks(job.id), st.enhanced(job.id)
    for i, text in raw.items():
        assert re.fullmatch(words_regex(text), enhanced[i]["text"]), (text, enhanced[i]["text"])
        assert enhanced[i]["text"] != text  # enhanced, not the raw text standing in
    requests = [e for e in server.log() if e["path"] == "/v1/chat/completions"]
    assert sorted(str(e["regex"]) for e in requests) == sorted(words_regex(t) for t in raw.values())
    for entry in requests:
        assert entry["status"] == 200 and entry["schema_error"] is None
        assert re.fullmatch(str(entry["regex"]), entry["messages"][-1]["content"])
