"""The Celery app: `celery -A maie worker -Q enhance`, `-Q summary` and `-Q asr` find it here.

Reliability settings and why (see docs/OPERATIONS.md):
- acks_late + reject_on_worker_lost: a chunk whose worker dies is redelivered, not lost; tasks write
  their results idempotently, keyed by job and chunk, so running twice is harmless.
- prefetch 1 per thread: a pool reserves only what it can run now.
- the visibility timeout outlasts one task message: its retry countdown plus one run (each retry
  is a new message), or Redis would hand a still-running task to a second worker.
- not `worker_cancel_long_running_tasks_on_connection_loss`: the threads pool cannot cancel a
  running task (every reconnection logged "Failed to cancel active request" with a
  NotImplementedError); a task whose acknowledgement is lost with the connection is delivered
  again, and writes the same records.
- result_expires outlasts any job: the chord counter lives under it.
- the threads pool: LLM calls wait on the network or on one shared engine, and vLLM's engine spawns
  processes, which a daemonic prefork child cannot do.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from celery import Celery, signals
from celery.app.trace import setup_worker_optimizations
from celery.utils.nodenames import gethostname

from maie.broker import guard_closed_redis_channels, is_amqp, task_queues, transport_options
from maie.errors import ConfigError
from maie.settings import TASKS, Settings, get_settings

__all__ = [
    "app",
    "app_for",
    "celery_config",
    "default_node_name",
    "visibility_timeout",
    "QUEUES",
    "TASK_ROUTES",
    "startup_settings",
]

log = logging.getLogger("maie.worker")

QUEUES = ("enhance", "summary", "asr")
TASK_ROUTES: dict[str, dict[str, str]] = {
    "maie.asr_split": {"queue": "asr"},
    "maie.asr_part": {"queue": "asr"},
    "maie.asr_join": {"queue": "asr"},
    "maie.enhance_chunk": {"queue": "enhance"},
    "maie.summarize": {"queue": "summary"},
    "maie.partial_notes": {"queue": "summary"},
    "maie.assemble": {"queue": "summary"},
}
RESULT_EXPIRES = 7 * 86400


def visibility_timeout(settings: Settings) -> int:
    """Seconds before Redis hands an unacknowledged message to another worker. Every retry
    countdown stays below it (see maie.tasks), or a task waiting to retry would run twice."""
    return settings.broker_visibility_timeout or max(3600, int(settings.max_message_seconds * 2))


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = visibility_timeout(settings)
    return {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": task_queues(settings.celery_broker_url, QUEUES),
        "task_routes": TASK_ROUTES,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "broker_transport_options": transport_options(settings.celery_broker_url, visibility),
        # RabbitMQ: quorum queues need per-consumer QoS and native delayed delivery for retry
        # countdowns; Celery switches both on when it detects them (maie/broker.py).
        "worker_detect_quorum_queues": True,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "visibility_timeout": visibility,
        "result_expires": RESULT_EXPIRES,
        "task_track_started": True,
        "result_extended": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": True,
    }


def _running_under_celery() -> bool:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    return argv0 == "celery" or (argv0 == "__main__.py" and "celery" in sys.argv[0])


# Settings are read once, at import. A configuration error stops `celery -A maie ...` at once with
# its one-line message; an application importing `maie` gets it as ConfigError on first use instead.
startup_error: ConfigError | None = None
try:
    startup_settings: Settings = get_settings()
except ConfigError as exc:
    if _running_under_celery():
        sys.stderr.write(f"maie: configuration error: {exc}\n")
        raise SystemExit(2) from None
    startup_error = exc
    startup_settings = Settings.model_construct()

if _running_under_celery() and startup_error is None:
    from maie.flower import apply as _secure_flower
    from maie.flower import is_flower_command

    if is_flower_command(sys.argv):
        # Before Flower reads its FLOWER_* variables: auth required, loopback unless authenticated.
        try:
            for _warning in _secure_flower(startup_settings, sys.argv, os.environ):
                sys.stderr.write(f"maie: warning: {_warning}\n")
        except ConfigError as exc:
            sys.stderr.write(f"maie: error: {exc}\n")
            raise SystemExit(2) from None

guard_closed_redis_channels()  # a kombu bug that stops workers when Redis dies: see maie/broker.py
app = Celery("maie", include=["maie.tasks", "maie.asr_tasks"])
app.conf.update(celery_config(startup_settings))
_apps: dict[tuple[str, str], Celery] = {}


def app_for(settings: Settings) -> Celery:
    """The app that sends to `settings`' broker: `app` itself unless the caller passed other URLs."""
    key = (settings.celery_broker_url, settings.celery_result_backend)
    if key == (startup_settings.celery_broker_url, startup_settings.celery_result_backend):
        return app
    if key not in _apps:
        # Celery reads CELERY_BROKER_URL and CELERY_RESULT_BACKEND from the environment before its
        # configuration: pin the backend and the read/write broker URLs, or this app would send
        # the job to the environment's Redis while its records went to `settings`' Redis.
        other = Celery("maie", set_as_current=False)
        other.backend_cls = settings.celery_result_backend  # takes precedence over the environment
        other.conf.update(
            celery_config(settings),
            broker_read_url=settings.celery_broker_url,
            broker_write_url=settings.celery_broker_url,
        )
        _apps[key] = other
    return _apps[key]


def _queues_of(options: dict[str, Any]) -> list[str]:
    raw = options.get("queues") or []
    if isinstance(raw, str):
        raw = raw.split(",")
    return [q.strip() for q in raw if q.strip()] or list(QUEUES)


def _node_name_given(argv: list[str]) -> bool:
    return any(a in ("-n", "--hostname") or a.startswith(("--hostname=", "-n")) for a in argv[1:])


def default_node_name(queues: list[str]) -> str:
    """`enhance@host` for `-Q enhance`: each pool shows as its own worker, not `celery@host`."""
    return f"{'-'.join(queues)}@{gethostname()}"


@signals.celeryd_init.connect
def _on_worker_init(
    sender: Any = None, instance: Any = None, conf: Any = None, options: Any = None, **_: Any
) -> None:
    from maie.backends import bind_queues
    from maie.logs import set_pool

    settings = startup_settings
    queues = _queues_of(options or {})
    bind_queues(queues)
    set_pool("-".join(queues))
    if instance is not None and not _node_name_given(sys.argv):
        # Celery names every worker celery@host unless -n is given: two pools on one host would
        # show as one worker in Flower and clash in `celery inspect`.
        instance.hostname = default_node_name(queues)
        setup_worker_optimizations(instance.app, instance.hostname)
    if is_amqp(settings.celery_broker_url):
        _declare_amqp_queues()
    if (options or {}).get("concurrency") is None and conf.worker_concurrency is None:
        if queues == ["asr"]:
            # The recognition pool: as many threads as recognition calls the model runs at once.
            conf.worker_concurrency = settings.asr.concurrency
        else:
            # A pool's default concurrency is what fills its LLM: the server's batch, or the engine's.
            task = next((q for q in queues if q in TASKS), "enhance")
            conf.worker_concurrency = (
                settings.task_settings(task).max_num_seqs  # type: ignore[arg-type]
                if settings.llm_backend == "local_vllm"
                else 16
            )
    if "asr" in queues:
        from maie.asr import set_pool_size

        set_pool_size(int((options or {}).get("concurrency") or conf.worker_concurrency or 1))


def _declare_amqp_queues() -> None:
    from maie.broker import declare_amqp_queues

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=5)
            declare_amqp_queues(conn, app.conf.task_queues)
    except Exception as exc:  # RabbitMQ down at start-up: the worker connects when it is back
        log.warning("cannot declare the queues on RabbitMQ yet: %s", exc)


@signals.after_setup_logger.connect
def _on_setup_logger(**_: Any) -> None:
    from maie.logs import setup_logging

    s = startup_settings
    setup_logging(s.log_dir, s.log_level, max_bytes=s.log_max_bytes, backups=s.log_backup_count)


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Bind each consumed task's backend now, so the log says which endpoint and model it uses."""
    from maie.backends import bound_queues, discover_backends, get_backend
    from maie.reconcile import start_reconciler
    from maie.tasks import store

    queues = bound_queues() or set(QUEUES)
    tasks = [t for t in TASKS if t in queues]
    log.info("worker ready: queues=%s backend=%s", ",".join(sorted(queues)), startup_settings.llm_backend)
    # Every pool watches for jobs that stopped making progress (maie.reconcile), one at a time.
    start_reconciler(sender.app if sender is not None else app, startup_settings, store())

    if "asr" in queues:
        # The recognition model loads off the start-up path too; the first task waits for it.
        threading.Thread(target=_load_asr_model, name="maie-asr-load", daemon=True).start()

    def bind() -> None:
        for task in tasks:
            try:
                get_backend(task, startup_settings)
            except Exception as exc:  # logged here; the task that needs it fails with the reason
                log.error("LLM %s backend unavailable: %s", task, exc)

    if startup_settings.llm_backend == "local_vllm":
        # Loading an engine takes a while: do it off the start-up path so the worker stays
        # responsive; the first task waits for it through the same lock.
        threading.Thread(target=bind, name="maie-engine-load", daemon=True).start()
        return
    try:
        # Learn each endpoint's model and context now; a model it does not serve stops the worker.
        discover_backends(tasks, startup_settings)
    except ConfigError as exc:
        # One line (stderr is the log here), then exit 2 like any configuration error.
        log.error("maie: configuration error: %s", exc)
        raise SystemExit(2) from None


def _load_asr_model() -> None:
    from maie.asr import get_recognizer

    try:
        rec = get_recognizer(startup_settings.asr)
        log.info("ASR model loaded in %.1f s: %s", rec.load_seconds, rec.version())
    except Exception as exc:  # logged here; the task that needs it fails with the reason
        log.error("ASR model unavailable: %s", exc)


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    from maie.backends import reset_backends
    from maie.reconcile import stop_reconciler

    stop_reconciler()
    reset_backends()


@signals.task_prerun.connect
def _on_task_prerun(kwargs: Any = None, **_: Any) -> None:
    from maie.logs import job_id_var

    job_id_var.set(str((kwargs or {}).get("job_id", "-")))


@signals.task_postrun.connect
def _on_task_postrun(**_: Any) -> None:
    from maie.logs import job_id_var

    # Pool threads run one task after another: the next line outside a task must not name this job.
    job_id_var.set("-")
