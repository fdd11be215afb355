"""A transcript four times longer than the summary model's context gets a valid two-level summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import redis
from conftest import Worker, base_env, clean_redis, load_jsonl, start_worker
from fake_openai import FakeServerProcess

from maie import submit
from maie.chunking import approx_token_count
from maie.settings import load_settings
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
            LLM_SERVER__SUMMARY_BASE_URL=server_c.base_url,
            LLM_SUM__MAX_TOKENS="256",
        )
        log_dir = tmp_path_factory.mktemp("small-context")
        workers = {q: start_worker(q, env, log_dir) for q in ("enhance", "summary")}
        yield server_c, workers
        for w in workers.values():
            w.stop()


def test_long_transcript_is_summarised_in_two_levels(
    small_context: tuple[FakeServerProcess, dict[str, Worker]],
    fresh_redis: redis.Redis,
    server_a: FakeServerProcess,
    tmp_path: Path,
) -> None:
    server_c, _ = small_context
    server_a.reset()
    server_c.reset()
    transcript = max((str(i["transcript"]) for i in load_jsonl("summary_dev.jsonl")), key=len)
    assert approx_token_count(transcript) > 4 * CONTEXT
    result = submit(transcript, settings=load_settings(env_file=None)).wait(timeout=180)
    assert result.status == "SUCCESS", result.error
    assert result.summary is not None
    jsonschema.validate(result.summary, load_template("generic_summary").schema)
    calls = [e for e in server_c.log() if str(e["path"]).endswith("/chat/completions")]
    notes = [c for c in calls if not c["has_response_format"]]
    finals = [c for c in calls if c["has_response_format"]]
    assert len(notes) >= 4 and len(finals) == 1
    # The final call came after every partial note and fit the context.
    assert calls[-1] is finals[0] or calls.index(finals[0]) > max(calls.index(n) for n in notes)
    final_prompt = "\n".join(m["content"] for m in finals[0]["messages"])  # type: ignore[index]
    assert finals[0]["max_tokens"] is not None
    assert len(final_prompt.split()) + int(finals[0]["max_tokens"]) <= CONTEXT  # type: ignore[call-overload]
    # The groups' transcripts cover the enhanced transcript exactly: no chunk left out or repeated.
    inner = [
        str(n["messages"][-1]["content"]).split("<transcript>")[1].split("</transcript>")[0].strip()  # type: ignore[index]
        for n in notes
    ]
    assert result.enhanced_text is not None
    assert all(part in result.enhanced_text for part in inner)
    assert sum(len(p.split()) for p in inner) == len(result.enhanced_text.split())
