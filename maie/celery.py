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
- result_expires (JOB_TTL_SECONDS) outlasts any job: the chord counter lives under it; it must
  exceed the visibility timeout, or a redelivered task would find its job's records gone.
- the threads pool: LLM calls wait on the network or on one shared engine, and vLLM's engine spawns
  processes, which a daemonic prefork child cannot do.

Importing this module reads nothing: the app is configured from the settings the first time it is
used, and `celery -A maie <command>` checks them as the command starts (one line, exit 2).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click
from celery import Celery, signals
from celery.app.trace import setup_worker_optimizations
from celery.utils.nodenames import gethostname

from maie.backends.kinds import kind_of
from maie.broker import guard_closed_redis_channels, is_amqp, task_queues, transport_options
from maie.errors import ConfigError
from maie.lanes import with_lanes
from maie.names import ALL_QUEUES, QUEUES, TASK_QUEUES, TASKS, Task
from maie.settings import Settings, get_settings, use_env_file

__all__ = [
    "app",
    "client_app",
    "forget_client_app",
    "create_app",
    "celery_config",
    "default_concurrency",
    "default_node_name",
    "max_message_seconds",
    "visibility_timeout",
    "job_ttl",
    "TASK_ROUTES",
]

log = logging.getLogger("maie.worker")

TASK_ROUTES: dict[str, dict[str, str]] = {name: {"queue": queue} for name, queue in TASK_QUEUES.items()}


def max_message_seconds(settings: Settings) -> float:
    """An upper bound on how long one task message stays unacknowledged: its retry countdown
    (held by the worker) plus one run of a few LLM calls. Each retry is a new message, so the
    retry deadline does not add up here."""
    return settings.task_retry_backoff_max + 3 * kind_of(settings).call_timeout(settings)


def visibility_timeout(settings: Settings) -> int:
    """Seconds before Redis hands an unacknowledged message to another worker. Every retry
    countdown stays below it (see maie.tasks), or a task waiting to retry would run twice."""
    return settings.broker_visibility_timeout or max(3600, int(max_message_seconds(settings) * 2))


def job_ttl(settings: Settings) -> int:
    """Seconds a job's records and Celery's results live after their last write (JOB_TTL_SECONDS);
    ConfigError unless it outlasts the visibility timeout."""
    visibility = visibility_timeout(settings)
    if settings.job_ttl_seconds <= visibility:
        raise ConfigError(
            f"JOB_TTL_SECONDS={settings.job_ttl_seconds} must exceed the visibility timeout "
            f"({visibility} s): a redelivered task would find its job's records expired; "
            "raise it or lower BROKER_VISIBILITY_TIMEOUT"
        )
    return settings.job_ttl_seconds


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = visibility_timeout(settings)
    return {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": task_queues(settings.celery_broker_url, ALL_QUEUES),
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
        "result_expires": job_ttl(settings),
        "task_track_started": True,
        "result_extended": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": True,
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A MAIE Celery app. Creating it reads nothing: it is configured the first time it is used,
    from `settings`, or without them from the process settings (the environment and `.env`).

    `app` below is the one `celery -A maie` finds and the tasks are registered on; an application
    that passes its own Settings to `maie.submit` gets an app of its own for their broker."""
    app = Celery("maie", include=["maie.tasks", "maie.asr_tasks"], set_as_current=settings is None)
    pinned: dict[str, Any] = {}
    if settings is not None:
        # Celery reads CELERY_BROKER_URL and CELERY_RESULT_BACKEND from the environment before its
        # configuration: pin the backend and the read/write broker URLs, or this app would send
        # the job to the environment's Redis while its records went to `settings`' Redis.
        app.backend_cls = settings.celery_result_backend
        pinned = {
            "broker_read_url": settings.celery_broker_url,
            "broker_write_url": settings.celery_broker_url,
        }

    def configure(sender: Celery, **_: Any) -> None:
        sender.config_from_object({**celery_config(settings or get_settings()), **pinned})

    app.on_configure.connect(configure, sender=app, weak=False)
    return app


app = create_app()


_client_apps: dict[tuple[str, str], Celery] = {}


def client_app(settings: Settings | None = None) -> Celery:
    """The app that sends to `settings`' broker: `app` without settings, else one app per pair of
    broker and Redis URLs in this process (its connection pools are reused by every job)."""
    if settings is None:
        return app
    key = (settings.celery_broker_url, settings.celery_result_backend)
    if key not in _client_apps:
        _client_apps[key] = create_app(settings)
    return _client_apps[key]


def forget_client_app(broker_url: str, backend_url: str) -> Celery | None:
    """Forget the app of these URLs (their servers are going away) and return it to be closed."""
    return _client_apps.pop((broker_url, backend_url), None)


# `celery -A maie ... --env-file prod.env`: the settings file, for every subcommand. Declaring it as
# a preload option also gives MAIE its start-up hook (below), which runs before any subcommand.
app.user_options["preload"].add(
    click.Option(["--env-file"], default=".env", show_default=True, help="MAIE: the settings file to read.")
)


@signals.user_preload_options.connect
def _on_command_start(app: Celery | None = None, options: dict[str, Any] | None = None, **_: Any) -> None:
    """`celery -A maie <command>` starts: check the settings (one line and exit 2 when they are
    wrong), and secure Flower before it reads its FLOWER_* variables."""
    if app is None or app.main != "maie":
        return
    use_env_file((options or {}).get("env_file") or ".env")
    try:
        settings = get_settings()
        job_ttl(settings)
    except ConfigError as exc:
        sys.stderr.write(f"maie: configuration error: {exc}\n")
        raise SystemExit(2) from None
    from maie.flower import apply as secure_flower
    from maie.flower import is_flower_command

    if is_flower_command(sys.argv):
        # Auth required, loopback unless authenticated (maie/flower.py).
        try:
            for warning in secure_flower(settings, sys.argv, os.environ):
                sys.stderr.write(f"maie: warning: {warning}\n")
        except ConfigError as exc:
            sys.stderr.write(f"maie: error: {exc}\n")
            raise SystemExit(2) from None


def default_concurrency(queues: Sequence[str], settings: Settings) -> int:
    """Threads a pool runs unless `-c` or WORKER_CONCURRENCY says otherwise: for the recognition
    pool as many as the model runs at once, for an LLM pool what fills its LLM's batch."""
    if list(queues) == ["asr"]:
        return settings.asr.concurrency
    task: Task = next((t for t in TASKS if t in queues), "enhance")
    return kind_of(settings).default_concurrency(task, settings)


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

    guard_closed_redis_channels()  # a kombu bug that stops workers when Redis dies: see maie/broker.py
    settings = get_settings()
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
        conf.worker_concurrency = default_concurrency(queues, settings)
    if "asr" in queues:
        from maie.asr import set_pool_size

        set_pool_size(int((options or {}).get("concurrency") or conf.worker_concurrency or 1))


@signals.worker_init.connect
def _on_worker_queues(sender: Any = None, **_: Any) -> None:
    """A pool started with `-Q enhance` consumes the short lane too (maie.lanes). Celery has
    selected the `-Q` queues by now; the consumer starts after this signal."""
    queues = sender.app.amqp.queues
    for name in with_lanes(list(queues.consume_from or {})):
        if name not in (queues.consume_from or {}):
            queues.select_add(queues[name])  # the declared queue (quorum on RabbitMQ), not a new one


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

    s = get_settings()
    setup_logging(s.log_dir, s.log_level, max_bytes=s.log_max_bytes, backups=s.log_backup_count)


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Bind each consumed task's backend now, so the log says which endpoint and model it uses."""
    from maie.backends import bound_queues, discover_backends, get_backend
    from maie.reconcile import start_reconciler
    from maie.task_base import store

    settings = get_settings()
    queues = bound_queues() or set(QUEUES)
    tasks = [t for t in TASKS if t in queues]
    log.info("worker ready: queues=%s backend=%s", ",".join(sorted(queues)), settings.llm_backend)
    # Every pool watches for jobs that stopped making progress (maie.reconcile), one at a time.
    start_reconciler(sender.app if sender is not None else app, settings, store())

    if "asr" in queues:
        # The recognition model loads off the start-up path too; the first task waits for it.
        threading.Thread(target=_load_asr_model, name="maie-asr-load", daemon=True).start()

    def bind() -> None:
        for task in tasks:
            try:
                get_backend(task, settings)
            except Exception as exc:  # logged here; the task that needs it fails with the reason
                log.error("LLM %s backend unavailable: %s", task, exc)

    if kind_of(settings).loads_slowly:
        # Loading an engine takes a while: do it off the start-up path so the worker stays
        # responsive; the first task waits for it through the same lock.
        threading.Thread(target=bind, name="maie-engine-load", daemon=True).start()
        return
    try:
        # Learn each endpoint's model and context now; a model it does not serve stops the worker.
        discover_backends(tasks, settings)
    except ConfigError as exc:
        # One line (stderr is the log here), then exit 2 like any configuration error.
        log.error("maie: configuration error: %s", exc)
        raise SystemExit(2) from None


def _load_asr_model() -> None:
    from maie.asr import get_recognizer

    try:
        rec = get_recognizer(get_settings().asr)
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
