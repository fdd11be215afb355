"""Jobs through real worker processes and real vLLM on CPU: in-process engines, then vLLM servers.

The model is the tiny random one (its words are noise, so enhancement ends degraded — that is the
faithfulness check doing its job); what these tests prove is the plumbing: each pool builds its own
engine from its own settings once, constrained decoding makes the summary schema-valid, and each
task's requests reach its own server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
from conftest import Worker, base_env, clean_redis, start_worker

from maie import JobResult, submit
from maie.settings import load_settings
from maie.templates import load_template

TRANSCRIPT = (
    "Anna: so the budget for the new remote is twenty euros\n"
    "Ben: and we ship it in may with a yellow case\n"
    "Anna: okay ben will call the factory on monday\n"
)

# A template with short bounded fields: a random model fills strings up to their maxLength.
TINY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "x-language": "en",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "decided": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["title", "decided", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def templates_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("templates")
    bundle = root / "tiny_notes"
    bundle.mkdir()
    (bundle / "schema.json").write_text(json.dumps(TINY_SCHEMA, indent=2))
    (bundle / "example.json").write_text(json.dumps({"title": "Budget", "decided": True, "tags": ["x"]}))
    (bundle / "prompt.jinja").write_text(
        "Summarise the transcript as JSON matching this schema:\n{{ schema_json }}\n\n"
        "Transcript:\n{{ transcript }}\n"
    )
    return root


def engine_env(templates: Path, **extra: str) -> dict[str, str]:
    return base_env(
        HF_HUB_OFFLINE="1",
        TEMPLATES_DIR=str(templates),
        LLM_ENHANCE__MAX_MODEL_LEN="1024",
        LLM_SUM__MAX_MODEL_LEN="2048",
        LLM_ENHANCE__ENFORCE_EAGER="true",
        LLM_SUM__ENFORCE_EAGER="true",
        LLM_SUM__MAX_TOKENS="256",
        LLM_SERVER__REQUEST_TIMEOUT_SECONDS="120",
        **extra,
    )


def run_job(templates: Path, **kwargs: Any) -> JobResult:
    settings = load_settings(env_file=None, templates_dir=templates)
    return submit(TRANSCRIPT, template_id="tiny_notes", settings=settings, **kwargs).wait(timeout=300)


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


# -- vllm_server: real OpenAI-compatible vLLM servers ---------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
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
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"vLLM server not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


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
