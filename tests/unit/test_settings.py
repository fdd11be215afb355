"""Every configuration example of the migration guide resolves to the endpoints it documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from maie.errors import ConfigError
from maie.settings import LEGACY_NAMES, find_legacy_names, load_settings


def write_env(path: Path, text: str) -> Path:
    env = path / ".env"
    env.write_text(text)
    return env


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL")
    s = load_settings(env_file=None)
    assert s.llm_backend == "vllm_server"
    assert s.endpoint("enhance").base_url == "http://localhost:8001/v1"
    assert s.endpoint("summary").base_url == "http://localhost:8001/v1"
    assert s.celery_broker_url == "redis://localhost:6379/0"


def test_single_server_summary_falls_back_to_enhance(tmp_path: Path) -> None:
    env = write_env(
        tmp_path,
        """
LLM_BACKEND=vllm_server
LLM_SERVER__ENHANCE_BASE_URL=http://localhost:8001/v1
LLM_SERVER__ENHANCE_API_KEY=your-key
LLM_SERVER__ENHANCE_MODEL_NAME=Qwen/Qwen2.5-3B-Instruct
""",
    )
    s = load_settings(env_file=env)
    enhance, summary = s.endpoint("enhance"), s.endpoint("summary")
    assert enhance.base_url == summary.base_url == "http://localhost:8001/v1"
    assert enhance.model_name == summary.model_name == "Qwen/Qwen2.5-3B-Instruct"
    assert summary.api_key is not None and summary.api_key.get_secret_value() == "your-key"


def test_dual_servers(tmp_path: Path) -> None:
    env = write_env(
        tmp_path,
        """
LLM_BACKEND=vllm_server
LLM_SERVER__ENHANCE_BASE_URL=http://localhost:8001/v1
LLM_SERVER__ENHANCE_API_KEY=your-key-1
LLM_SERVER__ENHANCE_MODEL_NAME=Qwen/Qwen2.5-3B-Instruct

LLM_SERVER__SUMMARY_BASE_URL=http://localhost:8002/v1
LLM_SERVER__SUMMARY_API_KEY=your-key-2
LLM_SERVER__SUMMARY_MODEL_NAME=Qwen/Qwen2.5-1.5B-Instruct
""",
    )
    s = load_settings(env_file=env)
    e, m = s.endpoint("enhance"), s.endpoint("summary")
    assert (e.base_url, e.model_name) == ("http://localhost:8001/v1", "Qwen/Qwen2.5-3B-Instruct")
    assert (m.base_url, m.model_name) == ("http://localhost:8002/v1", "Qwen/Qwen2.5-1.5B-Instruct")
    assert e.api_key is not None and e.api_key.get_secret_value() == "your-key-1"
    assert m.api_key is not None and m.api_key.get_secret_value() == "your-key-2"


def test_minimal_single_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BACKEND", "vllm_server")
    monkeypatch.setenv("LLM_SERVER__ENHANCE_BASE_URL", "http://localhost:8001/v1")
    s = load_settings(env_file=None)
    assert s.endpoint("summary").base_url == "http://localhost:8001/v1"
    assert s.endpoint("summary").model_name is None  # asked from the server's /v1/models


def test_dual_advanced_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SERVER__ENHANCE_BASE_URL", "http://gpu1.internal:8001/v1")
    monkeypatch.setenv("LLM_SERVER__ENHANCE_MODEL_NAME", "Qwen2.5-14B-Instruct-AWQ")
    monkeypatch.setenv("LLM_SERVER__SUMMARY_BASE_URL", "http://gpu2.internal:8002/v1")
    monkeypatch.setenv("LLM_SERVER__SUMMARY_MODEL_NAME", "Qwen2.5-1.5B-Instruct")
    s = load_settings(env_file=None)
    assert s.endpoint("enhance").model_name == "Qwen2.5-14B-Instruct-AWQ"
    assert s.endpoint("summary").base_url == "http://gpu2.internal:8002/v1"
    assert s.endpoint("summary").model_name == "Qwen2.5-1.5B-Instruct"


def test_local_vllm_reads_each_task_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BACKEND", "local_vllm")
    monkeypatch.setenv("LLM_ENHANCE__MODEL", "/models/big")
    monkeypatch.setenv("LLM_SUM__MODEL", "/models/small")
    monkeypatch.setenv("LLM_SUM__MAX_NUM_SEQS", "8")
    s = load_settings(env_file=None)
    assert s.task_settings("enhance").model == "/models/big"
    assert s.task_settings("summary").model == "/models/small"
    assert s.task_settings("summary").max_num_seqs == 8
    assert s.task_settings("enhance").max_num_seqs == 32


@pytest.mark.parametrize("legacy", sorted(LEGACY_NAMES))
def test_legacy_name_in_environment_is_refused(monkeypatch: pytest.MonkeyPatch, legacy: str) -> None:
    monkeypatch.setenv(legacy, "x")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    message = str(info.value)
    assert legacy in message and LEGACY_NAMES[legacy] in message and "environment" in message
    assert "\n" not in message


@pytest.mark.parametrize("legacy", sorted(LEGACY_NAMES))
def test_legacy_name_in_dotenv_is_refused(tmp_path: Path, legacy: str) -> None:
    env = write_env(tmp_path, f"{legacy}=x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=env)
    assert LEGACY_NAMES[legacy] in str(info.value) and str(env) in str(info.value)


def test_all_legacy_names_reported_at_once(tmp_path: Path) -> None:
    env = write_env(tmp_path, "\n".join(f"{n}=x" for n in LEGACY_NAMES))
    found = find_legacy_names(environ={}, env_file=env)
    assert sorted(n for n, _ in found) == sorted(LEGACY_NAMES)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=env)
    for replacement in LEGACY_NAMES.values():
        assert replacement in str(info.value)


def test_typo_in_nested_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SERVER__ENHANCE_BASEURL", "http://x/v1")
    with pytest.raises(ConfigError, match="ENHANCE_BASEURL"):
        load_settings(env_file=None)


def test_bad_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BACKEND", "ollama")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert "LLM_BACKEND" in str(info.value) and "\n" not in str(info.value)


def test_api_keys_are_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SERVER__ENHANCE_API_KEY", "sk-planted-secret-1234")
    s = load_settings(env_file=None)
    assert "sk-planted-secret-1234" not in repr(s)
    assert "sk-planted-secret-1234" not in s.model_dump_json()


def test_visibility_timeout_outlasts_a_retry_countdown_and_one_run() -> None:
    from maie.celery import celery_config, max_message_seconds

    s = load_settings(env_file=None)
    conf = celery_config(s)
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    one_run = s.task_retry_backoff_max + s.llm_server.request_timeout_seconds
    assert visibility > max_message_seconds(s) > one_run
    assert conf["result_expires"] > visibility
    # The retry budget is in time, not in count, and by default has no count bound.
    assert (s.task_retry_deadline_seconds, s.task_max_retries) == (900, None)


def test_job_ttl_sets_how_long_records_and_results_live(monkeypatch: pytest.MonkeyPatch) -> None:
    from maie.celery import celery_config, job_ttl

    assert load_settings(env_file=None).job_ttl_seconds == 7 * 86400
    monkeypatch.setenv("JOB_TTL_SECONDS", "120")
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT", "60")
    s = load_settings(env_file=None)
    assert job_ttl(s) == celery_config(s)["result_expires"] == 120
    monkeypatch.setenv("JOB_TTL_SECONDS", "0")
    with pytest.raises(ConfigError, match="JOB_TTL_SECONDS"):
        load_settings(env_file=None)


def test_job_ttl_must_outlast_the_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from maie.celery import job_ttl

    monkeypatch.setenv("JOB_TTL_SECONDS", "600")  # below the derived visibility timeout (3600 s)
    with pytest.raises(ConfigError, match="JOB_TTL_SECONDS=600 must exceed the visibility timeout"):
        job_ttl(load_settings(env_file=None))
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT", "600")
    with pytest.raises(ConfigError, match=r"\(600 s\)"):
        job_ttl(load_settings(env_file=None))


def test_no_cancel_on_connection_loss_with_the_threads_pool() -> None:
    # The threads pool cannot cancel a running task: Celery would log "Failed to cancel active
    # request" with a NotImplementedError traceback at every reconnection.
    from maie.celery import celery_config

    conf = celery_config(load_settings(env_file=None))
    assert conf["worker_pool"] == "threads"
    assert not conf.get("worker_cancel_long_running_tasks_on_connection_loss")
