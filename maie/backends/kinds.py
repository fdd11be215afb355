"""What each kind of backend (`LLM_BACKEND`) says about itself from the settings alone.

Start-up, `maie config show|check`, the HTTP API's model list, chunk sizing and the visibility
timeout all need facts about a task's LLM before (or without) building it: loading an engine takes
minutes. Each kind answers them here, so no caller branches on `LLM_BACKEND`:

    kind = kind_of(settings)
    kind.describe("enhance", settings).line()   # one line for logs and `config show`
    kind.default_concurrency("summary", settings)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from maie.backends.base import LLMBackend
from maie.errors import MaieError
from maie.names import Task
from maie.settings import Settings, mask_url

__all__ = ["Description", "Health", "BackendKind", "ServerKind", "LocalKind", "KINDS", "kind_of"]


@dataclass(frozen=True)
class Description:
    """A task's LLM as people and clients may see it (keys masked)."""

    kind: str
    task: Task
    model: str
    endpoint: str  # the base URL (password masked), or "in-process"
    api_key: str  # "set (masked)", "not set" or "not used"
    summary: str  # what serves the pool, in a few words
    line: str  # one line for logs and `maie config show`


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str
    hint: str | None = None


class BackendKind(ABC):
    name: ClassVar[str]
    # An engine that takes minutes to load is loaded off the worker's start-up path.
    loads_slowly: ClassVar[bool] = False

    @abstractmethod
    def build(self, task: Task, settings: Settings) -> LLMBackend:
        """A new backend for `task` (the caller keeps and reuses it)."""

    @abstractmethod
    def describe(self, task: Task, settings: Settings) -> Description: ...

    @abstractmethod
    def default_concurrency(self, task: Task, settings: Settings) -> int:
        """Threads a pool runs when `--concurrency` is not given: what fills its LLM's batch."""

    @abstractmethod
    def context_length(self, task: Task, settings: Settings) -> int | None:
        """The context known before any call, or None when the LLM reports it at start-up."""

    @abstractmethod
    def tokenizer(self, task: Task, settings: Settings) -> str | None:
        """The tokenizer that counts the task's tokens on the submitting side, if one is at hand."""

    @abstractmethod
    def call_timeout(self, settings: Settings) -> float:
        """The longest one LLM call of any task may take."""

    def endpoint_url(self, task: Task, settings: Settings) -> str | None:
        """A network endpoint shared by every worker (watched by one cooldown), if any."""
        return None

    @abstractmethod
    def health(self, task: Task, settings: Settings) -> Health:
        """Whether the task's LLM is there and answers (`maie config check`)."""


class ServerKind(BackendKind):
    """`LLM_BACKEND=vllm_server`: an OpenAI-compatible server per task."""

    name = "vllm_server"

    def build(self, task: Task, settings: Settings) -> LLMBackend:
        from maie.backends.openai_server import OpenAIServerBackend

        return OpenAIServerBackend(
            settings.endpoint(task),
            settings.llm_server.request_timeout_seconds,
            fallback_context=settings.task_settings(task).max_model_len,
        )

    def describe(self, task: Task, settings: Settings) -> Description:
        ep = settings.endpoint(task)
        key = "set (masked)" if ep.api_key else "not set"
        url = mask_url(ep.base_url)
        return Description(
            kind=self.name,
            task=task,
            model=ep.model_name or "(the model the server serves)",
            endpoint=url,
            api_key=key,
            summary="vLLM OpenAI-compatible server",
            line=f"endpoint={url} model={ep.model_name or '(served model)'} api_key={key}",
        )

    def default_concurrency(self, task: Task, settings: Settings) -> int:
        # Enough requests in flight to fill a server's continuous batch; the server queues the rest.
        return 16

    def context_length(self, task: Task, settings: Settings) -> int | None:
        return None  # learnt from the server's /v1/models by the pool at start-up

    def tokenizer(self, task: Task, settings: Settings) -> str | None:
        return settings.task_settings(task).tokenizer

    def call_timeout(self, settings: Settings) -> float:
        return settings.llm_server.request_timeout_seconds

    def endpoint_url(self, task: Task, settings: Settings) -> str | None:
        return settings.endpoint(task).base_url

    def health(self, task: Task, settings: Settings) -> Health:
        from maie.backends.openai_server import OpenAIServerBackend

        url = settings.endpoint(task).base_url
        started = time.monotonic()
        try:
            backend = self.build(task, settings)
            assert isinstance(backend, OpenAIServerBackend)
            served = backend.list_models()
            backend.chat([{"role": "user", "content": "ping"}], max_tokens=1, temperature=0.0)
        except MaieError as exc:
            return Health(
                False,
                f"FAILED {url}: {' '.join(str(exc).split())}",
                f"is the {task} server running? Check LLM_SERVER__{task.upper()}_BASE_URL, "
                'then `tail -f logs/app.log | grep "LLM"`',
            )
        return Health(
            True,
            f"ok {url} serves {', '.join(served)}; model {backend.model}, context "
            f"{backend.max_model_len} tokens; one-token completion in "
            f"{(time.monotonic() - started) * 1000:.0f} ms",
        )


class LocalKind(BackendKind):
    """`LLM_BACKEND=local_vllm`: a vLLM engine inside each worker process."""

    name = "local_vllm"
    loads_slowly = True

    def build(self, task: Task, settings: Settings) -> LLMBackend:
        from maie.backends.local_vllm import LocalVllmBackend

        return LocalVllmBackend(task, settings.task_settings(task))

    def describe(self, task: Task, settings: Settings) -> Description:
        t = settings.task_settings(task)
        return Description(
            kind=self.name,
            task=task,
            model=t.model,
            endpoint="in-process",
            api_key="not used",
            summary="in-process vLLM engine",
            line=(
                f"local engine model={t.model} dtype={t.dtype} "
                f"max_model_len={t.max_model_len} max_num_seqs={t.max_num_seqs}"
            ),
        )

    def default_concurrency(self, task: Task, settings: Settings) -> int:
        # One thread per sequence the engine batches: fewer leave it idle, more only wait.
        return settings.task_settings(task).max_num_seqs

    def context_length(self, task: Task, settings: Settings) -> int | None:
        return settings.task_settings(task).max_model_len

    def tokenizer(self, task: Task, settings: Settings) -> str | None:
        t = settings.task_settings(task)
        return t.tokenizer or t.model

    def call_timeout(self, settings: Settings) -> float:
        return max(settings.llm_enhance.request_timeout_seconds, settings.llm_sum.request_timeout_seconds)

    def health(self, task: Task, settings: Settings) -> Health:
        model = settings.task_settings(task).model
        if Path(model).is_dir():
            return Health(True, f"local engine model {model} found")
        return Health(False, f"local engine model {model} NOT FOUND (run scripts/make-dev-model.sh)")


KINDS: dict[str, BackendKind] = {kind.name: kind for kind in (ServerKind(), LocalKind())}


def kind_of(settings: Settings) -> BackendKind:
    """The kind `LLM_BACKEND` names (the settings only admit these)."""
    return KINDS[settings.llm_backend]
