"""Backends, built once per worker process for the queues that process consumes.

`bind_queues()` is called at worker start with the queues the worker was started on (`-Q`), and
`get_backend(task)` builds that task's backend on first use, then reuses it for every job. A worker
asked for a task it does not serve fails with "Client not available for task: <task>" and what to
check, instead of silently building a client for an endpoint nobody configured for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from maie.backends.base import Completion, LLMBackend, Message
from maie.backends.kinds import BackendKind, kind_of
from maie.errors import BackendUnavailable, ConfigError
from maie.names import Task
from maie.settings import Settings

__all__ = [
    "Completion",
    "LLMBackend",
    "Message",
    "BackendKind",
    "kind_of",
    "build_backend",
    "bind_queues",
    "get_backend",
    "bound_queues",
    "reset_backends",
    "discover_backends",
]

log = logging.getLogger("maie.llm")

_lock = threading.Lock()
_backends: dict[str, LLMBackend] = {}
_queues: set[str] | None = None  # None: not a worker (CLI, tests): any task may be built


def build_backend(task: Task, settings: Settings) -> LLMBackend:
    """A new backend for `task` from `settings` (the caller keeps and reuses it)."""
    return kind_of(settings).build(task, settings)


def bind_queues(queues: Iterable[str]) -> None:
    global _queues
    _queues = set(queues)


def bound_queues() -> set[str] | None:
    return _queues


def get_backend(task: Task, settings: Settings) -> LLMBackend:
    """This process's backend for `task`, built on first use and kept."""
    backend = _backends.get(task)
    if backend is not None and not getattr(backend, "dead", False):
        return backend
    if _queues is not None and task not in _queues:
        raise ConfigError(
            f"Client not available for task: {task}. This worker consumes "
            f"{', '.join(sorted(_queues)) or 'no queue'}; run the {task} pool with "
            f"`celery -A maie worker -Q {task}` and check its start-up lines in logs/app.log "
            '(grep "LLM")'
        )
    with _lock:
        backend = _backends.get(task)
        if backend is not None and getattr(backend, "dead", False):
            # A dead in-process engine is not kept: the next task loads a new one instead of
            # every later task failing on the old one.
            log.error("LLM %s engine is dead; loading a new one", task)
            _backends.pop(task)
            backend.close()
            backend = None
        if backend is None:
            try:
                backend = build_backend(task, settings)
            except Exception as exc:
                log.error("LLM %s backend failed to start: %s", task, exc)
                raise ConfigError(
                    f"Client not available for task: {task}: {exc}. Check the "
                    f"{'LLM_ENHANCE__' if task == 'enhance' else 'LLM_SUM__'}* or "
                    'LLM_SERVER__* settings and logs/app.log (grep "LLM")'
                ) from None
            _backends[task] = backend
            about = kind_of(settings).describe(task, settings)
            log.info(
                "LLM %s bound: backend=%s endpoint=%s model=%s",
                task,
                about.kind,
                backend.endpoint,
                about.model,
            )
    return backend


def discover_backends(tasks: Iterable[Task], settings: Settings) -> None:
    """At worker start-up: bind each task's backend and learn its model and context now.

    A configured model the endpoint does not serve raises ModelNotServed (the worker must not
    start: no job could ever run). Anything else is logged and asked again on first use: a server
    still loading its model, or a key being rotated, must not keep the pool down."""
    from maie.backends.openai_server import ModelNotServed

    for task in tasks:
        backend = get_backend(task, settings)
        try:
            backend.discover()
        except ModelNotServed:
            raise
        except (BackendUnavailable, ConfigError) as exc:
            log.warning("LLM %s endpoint not usable at start-up (asked again on first use): %s", task, exc)


def reset_backends() -> None:
    """Close and forget every backend (tests, worker shutdown)."""
    with _lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()
