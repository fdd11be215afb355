"""Jobs through real worker processes bound to real vLLM OpenAI-compatible servers on CPU."""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import redis
from conftest import clean_redis, load_jsonl, start_worker
from fakes.process import ManagedProcess, free_port
from helpers import CONSTRAINED_CHUNK, TINY_SCHEMA, engine_env, run_job, templates_dir_fixture  # noqa: F401

from maie import JobResult, submit
from maie.enhance import enhance_chunk_text, normalize_words
from maie.enhance_regex import words_regex
from maie.settings import load_settings
from maie.store import JobStore


# -- vllm_server: real OpenAI-compatible vLLM servers ---------------------------------------------
class VllmServer:
    """A vLLM OpenAI-compatible server on CPU serving `model` as `name`, started at once; its
    output in `log_path`."""

    def __init__(self, model: Path, name: str, log_path: Path, cpu: str) -> None:
        self.port = free_port()
        self.name = name
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        settings = load_settings(
            env_file=None,
            llm_enhance={
                "model": str(model),
                "max_model_len": 1024,
                "dtype": "bfloat16",
                "enforce_eager": True,
                "max_num_seqs": 8,
            },
            llm_server={"enhance_model_name": name},
        )
        from maie.serve import vllm_server_args, vllm_server_env

        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            *vllm_server_args(settings, "enhance", self.port, gpu=False),
        ]
        env = {
            **os.environ,
            **vllm_server_env(settings, "enhance", gpu=False),
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": cpu,
        }
        self.process = ManagedProcess(f"vLLM server {name}", cmd, log_path, env=env).start()

    def wait_ready(self, timeout: float = 300) -> None:
        self.process.wait_ready(self._answers, timeout, poll=1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def chat_requests(self) -> int:
        """Chat completions this server answered, from its own Prometheus metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("vllm:request_success_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def stop(self) -> None:
        self.process.stop(timeout=60)


@pytest.fixture(scope="module")
def servers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, VllmServer]]:
    log_dir = tmp_path_factory.mktemp("vllm-servers")
    started = {
        "enhance": VllmServer(tiny_model_dir, "tiny-enhance", log_dir / "enhance.log", "0"),
        "summary": VllmServer(tiny_model_dir, "tiny-summary", log_dir / "summary.log", "1"),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def job_through_server_pools(
    templates_dir: Path, redis_client: redis.Redis, log_dir: Path, **endpoints: str
) -> JobResult:
    """Start both pools bound to `endpoints`, run one job, stop the pools; the job must succeed."""
    clean_redis(redis_client)
    env = engine_env(templates_dir, LLM_BACKEND="vllm_server", **endpoints)
    workers = {q: start_worker(q, env, log_dir, 8) for q in ("enhance", "summary")}
    try:
        result = run_job(templates_dir)
    finally:
        for w in workers.values():
            w.stop()
    assert result.status == "SUCCESS", result.error
    jsonschema.validate(result.summary, TINY_SCHEMA)
    return result


def test_single_vllm_server_serves_both_tasks(
    servers: dict[str, VllmServer], templates_dir: Path, redis_client: redis.Redis, tmp_path: Path
) -> None:
    one = servers["enhance"]
    before = one.chat_requests()
    result = job_through_server_pools(
        templates_dir,
        redis_client,
        tmp_path,
        LLM_SERVER__ENHANCE_BASE_URL=one.base_url,
        LLM_SERVER__ENHANCE_MODEL_NAME=one.name,
    )
    assert result.versions["summary"].base_url == one.base_url
    # Enhancement (one or two calls per chunk) and the summary all went to the one server.
    assert one.chat_requests() - before >= len(result.chunks) + 1


def test_dual_vllm_servers_each_serve_their_own_task(
    servers: dict[str, VllmServer], templates_dir: Path, redis_client: redis.Redis, tmp_path: Path
) -> None:
    enhance, summary = servers["enhance"], servers["summary"]
    before = {k: s.chat_requests() for k, s in servers.items()}
    result = job_through_server_pools(
        templates_dir,
        redis_client,
        tmp_path,
        LLM_SERVER__ENHANCE_BASE_URL=enhance.base_url,
        LLM_SERVER__ENHANCE_MODEL_NAME=enhance.name,
        LLM_SERVER__SUMMARY_BASE_URL=summary.base_url,
        LLM_SERVER__SUMMARY_MODEL_NAME=summary.name,
    )
    n_chunks = len(result.chunks)
    enhance_calls = enhance.chat_requests() - before["enhance"]
    summary_calls = summary.chat_requests() - before["summary"]
    # Each chunk costs one call, or two when the first reply is unfaithful; the summary one or two
    # (a repair). A request for the wrong server would have been refused: each serves one name.
    assert n_chunks <= enhance_calls <= 2 * n_chunks
    assert 1 <= summary_calls <= 2
    assert result.versions["enhance"].base_url == enhance.base_url
    assert result.versions["summary"].base_url == summary.base_url


def test_constrained_enhancement_through_a_vllm_server_keeps_every_word(
    servers: dict[str, VllmServer],
) -> None:
    """The pattern reaches vLLM in its `structured_outputs` request field, and it binds decoding."""
    from maie.backends.openai_server import OpenAIServerBackend
    from maie.settings import Endpoint, LlmTaskSettings

    one = servers["enhance"]
    backend = OpenAIServerBackend(Endpoint("enhance", one.base_url, None, one.name), 120, 1024)
    try:
        cfg = LlmTaskSettings(temperature=1.0)
        out = enhance_chunk_text(backend, 0, CONSTRAINED_CHUNK, cfg, 0.0, "constrained")
    finally:
        backend.close()
    assert not out.degraded and out.attempts == 1, out
    assert normalize_words(out.text) == normalize_words(CONSTRAINED_CHUNK)
    assert re.fullmatch(words_regex(CONSTRAINED_CHUNK), out.text)


@pytest.mark.timeout(1800)  # long meetings: minutes of work, more on a loaded machine
def test_a_named_model_with_a_1024_token_context_summarises_four_times_that(
    servers: dict[str, VllmServer], templates_dir: Path, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The guide's named-model configuration against a real vLLM server started with
    --max-model-len 1024: the context is learnt from the server, prompts are counted by its
    /tokenize, and a transcript four times the context goes through levels of notes."""
    one = servers["enhance"]
    items = load_jsonl("summary_dev.jsonl")
    turns = [line for item in items for line in str(item["transcript"]).splitlines()]
    transcript = "\n".join(turns[:400])
    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{one.port}/tokenize",
            data=json.dumps({"model": one.name, "prompt": transcript}).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=60,
    ) as r:
        tokens = json.loads(r.read())["count"]
    assert tokens > 4 * 1024
    clean_redis(redis_client)
    env = engine_env(
        templates_dir,
        LLM_BACKEND="vllm_server",
        LLM_SERVER__ENHANCE_BASE_URL=one.base_url,
        LLM_SERVER__ENHANCE_MODEL_NAME=one.name,
    )
    workers = {q: start_worker(q, env, tmp_path, 8) for q in ("enhance", "summary")}
    try:
        settings = load_settings(env_file=None, templates_dir=templates_dir)
        job = submit(transcript, template_id="tiny_notes", settings=settings)
        result = job.wait(timeout=900)
    finally:
        for w in workers.values():
            w.stop()
    assert result.status == "SUCCESS", result.error
    jsonschema.validate(result.summary, TINY_SCHEMA)
    assert JobStore(settings.celery_result_backend, 3600).meta(job.id).summary_levels >= 1
    assert "max_model_len=1024 (reported by the server)" in workers["summary"].log()
    # vLLM refused nothing for its length: no 400 in its access log.
    refused = [line for line in one.log_path.read_text().splitlines() if '" 400' in line]
    assert not refused, refused[:3]
