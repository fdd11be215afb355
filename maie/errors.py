"""MAIE's one exception tree.

    MaieError
    ├── ConfigError            settings are wrong; fix the configuration (also 401/403 from an endpoint)
    ├── InputError             the transcript, template or feature asked for is invalid; nothing was queued
    ├── BackendUnavailable     the LLM could not be reached or was busy: a retry can help
    │                          (connection refused, timeout, 429, 5xx)
    ├── BackendRejected        the LLM refused the request or its output never became valid: a retry
    │                          cannot help (400, reply cut off by max_tokens, schema never satisfied)
    │   └── ContextExceeded    the prompt plus its reply do not fit the model's context: split and re-plan
    ├── QueueFull              a queue is over its depth limit; submit later
    ├── WorkerLost             a task's worker kept dying while running it (killed, out of memory)
    └── JobFailed              a job ended in failure; carries the stage and the reason

Every class carries only strings so Celery's JSON result backend can store and rebuild it with its
message intact (exceptions with required keyword arguments cannot be rebuilt).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "MaieError",
    "ConfigError",
    "InputError",
    "BackendUnavailable",
    "BackendRejected",
    "ContextExceeded",
    "QueueFull",
    "JobFailed",
    "JobCancelled",
    "WorkerLost",
]


class MaieError(Exception):
    """Base of every error MAIE raises on purpose."""

    # The error's name in job results and HTTP bodies. A subclass names its own with
    # `class X(MaieError, code="x")`; one that names none keeps its parent's.
    code: ClassVar[str] = "maie_error"

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[MaieError], tuple[str]]:
        return (type(self), (self.message,))


class ConfigError(MaieError, code="config_error"):
    """The configuration is invalid or an endpoint refused our credentials."""


class InputError(MaieError, code="input_error"):
    """The submitted transcript, template id or feature set is invalid."""


class BackendUnavailable(MaieError, code="backend_unavailable"):
    """The LLM backend could not answer now; retrying later can help."""


class BackendRejected(MaieError, code="backend_rejected"):
    """The LLM backend answered, but the request or its output cannot succeed as is."""


class ContextExceeded(BackendRejected, code="context_exceeded"):
    """The request does not fit the model's context; the same request can never succeed, a
    smaller one can. The server's own verdict (HTTP 400) when MAIE's count was too low."""


class QueueFull(MaieError, code="queue_full"):
    """A queue holds more waiting tasks than its configured limit."""


class WorkerLost(MaieError, code="worker_lost"):
    """A task was delivered again and again because its worker died while running it."""


class JobFailed(MaieError, code="job_failed"):
    """A job ended in failure at a given stage."""


class JobCancelled(MaieError, code="job_cancelled"):
    """A job was cancelled before it finished."""
