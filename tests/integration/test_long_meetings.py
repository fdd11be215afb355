"""Meetings of 500 to 30,000 words in every configuration the migration guide and compose show.

The test servers behave like vLLM where it matters: they report `max_model_len` in `/v1/models`,
serve `POST /tokenize`, and refuse with vLLM's 400 message any request whose prompt plus `max_tokens`
exceeds the context, counting tokens their own way (one per 3.5 characters, the worst case measured
on meetings), not with MAIE's estimator. Contexts are compose's defaults: 4,096 tokens for the
enhancement server, 8,192 for the summary server. Every job must succeed with a schema-valid
summary, keep every word of the transcript, and have no request refused for its length.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import redis
from conftest import base_env, clean_redis, meeting_of, start_worker
from fakes.server_process import FakeServerProcess

from maie import submit
from maie.enhance import normalize_words
from maie.settings import load_settings
from maie.store import JobStore
from maie.templates import load_template

SIZES = (500, 10_000, 30_000)  # words: a topic segment, about an hour, about three hours
ENHANCE_CONTEXT, SUMMARY_CONTEXT = 4096, 8192  # compose.yaml's defaults
KEY = "sk-test-long-key"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeServerProcess]]:
    with (
        FakeServerProcess(
            name="E", model="Qwen/Qwen2.5-3B-Instruct", api_key=KEY, max_model_len=ENHANCE_CONTEXT
        ) as e,
        FakeServerProcess(
            name="S", model="Qwen/Qwen2.5-1.5B-Instruct", api_key=KEY, max_model_len=SUMMARY_CONTEXT
        ) as s,
        # Another OpenAI-compatible server: no context in /v1/models, no /tokenize.
        FakeServerProcess(
            name="O",
            model="other-model",
            api_key=KEY,
            max_model_len=SUMMARY_CONTEXT,
            report_context=False,
            tokenize=False,
        ) as o,
    ):
        yield {"enhance": e, "summary": s, "other": o}


def configurations(servers: dict[str, FakeServerProcess]) -> dict[str, dict[str, str]]:
    """The guide's examples, each with and without the model names, plus a server that reports
    nothing (its context then comes from LLM_SUM__MAX_MODEL_LEN, and counts are estimated)."""
    e, s, o = servers["enhance"], servers["summary"], servers["other"]
    single = {"LLM_SERVER__ENHANCE_BASE_URL": e.base_url, "LLM_SERVER__ENHANCE_API_KEY": KEY}
    dual = {
        **single,
        "LLM_SERVER__SUMMARY_BASE_URL": s.base_url,
        "LLM_SERVER__SUMMARY_API_KEY": KEY,
    }
    names = {
        "LLM_SERVER__ENHANCE_MODEL_NAME": e.model or "",
        "LLM_SERVER__SUMMARY_MODEL_NAME": s.model or "",
    }
    return {
        "single": single,
        "single-named": {**single, "LLM_SERVER__ENHANCE_MODEL_NAME": e.model or ""},
        "dual": dual,
        "dual-named": {**dual, **names},
        "dual-unreported": {
            **single,
            "LLM_SERVER__ENHANCE_MODEL_NAME": e.model or "",
            "LLM_SERVER__SUMMARY_BASE_URL": o.base_url,
            "LLM_SERVER__SUMMARY_API_KEY": KEY,
            "LLM_SERVER__SUMMARY_MODEL_NAME": "other-model",
            "LLM_SUM__MAX_MODEL_LEN": str(SUMMARY_CONTEXT),
        },
    }


@pytest.fixture(scope="module")
def meetings() -> dict[int, str]:
    return {n: meeting_of(n) for n in SIZES}


@pytest.mark.timeout(1800)  # long meetings: minutes of work, more on a loaded machine
@pytest.mark.parametrize("config", ["single", "single-named", "dual", "dual-named", "dual-unreported"])
def test_meetings_of_every_length_in_every_configuration(
    config: str,
    servers: dict[str, FakeServerProcess],
    meetings: dict[int, str],
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean_redis(redis_client)
    for server in servers.values():
        server.reset()
    env = base_env(LLM_BACKEND="vllm_server", **configurations(servers)[config])
    for k, v in env.items():
        if k.startswith(("LLM_", "CELERY_")):
            monkeypatch.setenv(k, v)
    workers = {q: start_worker(q, env, tmp_path, concurrency=8) for q in ("enhance", "summary")}
    try:
        settings = load_settings(env_file=None)
        jobs = {
            n: submit(text, template_id="meeting_notes", settings=settings) for n, text in meetings.items()
        }
        results = {n: job.wait(timeout=600) for n, job in jobs.items()}
    finally:
        for w in workers.values():
            w.stop()
    schema = load_template("meeting_notes").schema
    store = JobStore(settings.celery_result_backend, 3600)
    for n, result in results.items():
        assert result.status == "SUCCESS", (config, n, result.error)
        assert result.summary is not None
        jsonschema.validate(result.summary, schema)
        assert result.enhanced_text is not None
        # The test server enhances faithfully: every word comes back, in order, none twice.
        assert normalize_words(result.enhanced_text) == normalize_words(meetings[n]), (config, n)
        levels = store.meta(jobs[n].id).summary_levels
        if n >= 10_000:
            assert levels >= 1, f"{config}: {n} words cannot fit {SUMMARY_CONTEXT} tokens in one call"
        if levels:
            # Level-1 notes cover the chunks exactly once, in order.
            groups = store.partials(jobs[n].id, 1)
            spans = [(groups[g]["start"], groups[g]["end"]) for g in range(len(groups))]
            assert spans[0][0] == 0 and spans[-1][1] == len(result.chunks)
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    # No request was refused for its length (or for anything else).
    for name, server in servers.items():
        refused = [e for e in server.log() if e["status"] != 200]
        assert not refused, (config, name, [(e["path"], e["status"]) for e in refused][:3])
    used = {name for name, server in servers.items() if server.log()}
    summary_server = "other" if "unreported" in config else "summary" if "dual" in config else None
    expected = {"enhance"} | ({summary_server} if summary_server else set())
    assert used == expected


def unserved_model_env(server: FakeServerProcess) -> dict[str, str]:
    """The single-endpoint example, naming a model the server does not serve."""
    return base_env(
        LLM_BACKEND="vllm_server",
        LLM_SERVER__ENHANCE_BASE_URL=server.base_url,
        LLM_SERVER__ENHANCE_API_KEY=KEY,
        LLM_SERVER__ENHANCE_MODEL_NAME="Qwen/Qwen2.5-7B-Instruct",
    )


def test_a_model_name_the_server_does_not_serve_stops_the_worker_with_one_line(
    servers: dict[str, FakeServerProcess], tmp_path: Path
) -> None:
    e = servers["enhance"]
    env = unserved_model_env(e)
    with pytest.raises(RuntimeError, match="exited 2") as failure:
        start_worker("enhance", env, tmp_path)
    lines = [line for line in str(failure.value).splitlines() if "not served" in line]
    assert len(lines) == 1 and "ERROR" in lines[0]
    assert lines[0].endswith(
        "maie: configuration error: model 'Qwen/Qwen2.5-7B-Instruct' is not served by "
        f"{e.base_url} (it serves: Qwen/Qwen2.5-3B-Instruct); check LLM_SERVER__ENHANCE_MODEL_NAME"
    )


def test_config_check_names_the_model_that_is_not_served(
    servers: dict[str, FakeServerProcess], tmp_path: Path
) -> None:
    env = unserved_model_env(servers["enhance"])
    maie = Path(sys.executable).parent / "maie"
    done = subprocess.run(
        [str(maie), "config", "check"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "model 'Qwen/Qwen2.5-7B-Instruct' is not served" in done.stderr
