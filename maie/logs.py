"""Logging: `logs/app.log` and `logs/errors.log`, shared by every MAIE process, every line naming
its job and its pool.

Several processes (both pools, more workers of one pool, Flower, the CLI) write to the same two
files. Python's RotatingFileHandler cannot rotate a file other processes hold open, so the files are
written by concurrent-log-handler's handler: each record is written under a lock file in the log
directory, and whichever process finds the file full rotates it while the others wait; a record
is one write of whole lines, so lines never interleave and none is lost across a rotation.

Line format::

    2026-01-12 10:04:31,512 INFO [job=3f2a...] [pool=enhance] 4711 maie.tasks: chunk 4 enhanced ...

`job` is the job of the task the line was logged for (`-` outside a job; Celery's own "Task ...
received/succeeded" lines take it from the task id), `pool` the queues of the worker (`-` for
other processes), then the process id. The lines of a traceback repeat the tags, so a grep for a
job also shows its tracebacks.

Transcript text is never logged at INFO: log ids, counts and sizes. Secrets never reach a log
because settings hold them as `SecretStr`, which prints as `**********`.
"""

from __future__ import annotations

import contextvars
import logging
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler

__all__ = ["job_id_var", "set_pool", "setup_logging", "JobIdFilter", "job_of_task", "FORMAT"]

job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("maie_job_id", default="-")

FORMAT = "%(asctime)s %(levelname)s [job=%(job_id)s] [pool=%(pool)s] %(process)d %(name)s: %(message)s"
_MARK = "_maie_handler"
_pool = "-"

# Libraries that log request and connection details at DEBUG/INFO: kept at WARNING so MAIE's logs
# are not flooded and never hold request bodies. httpx2/httpcore2 are the openai client's HTTP
# stack in its newer releases.
NOISY_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2", "urllib3")


def set_pool(name: str) -> None:
    """Name this process's pool (the worker's queues) on every line it logs from now on."""
    global _pool
    _pool = name or "-"


def job_of_task(task_id: object) -> str:
    """The job of a MAIE task id: `<job>`, `<job>-enhance-<i>`, `<job>-notes-<g>`, `<job>-final`."""
    return str(task_id).split("-", 1)[0] if task_id else "-"


class JobIdFilter(logging.Filter):
    """Stamps each record with its job (the running task's, or the task the record is about) and pool."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            job = job_id_var.get()
            # Celery's worker logs "Task name[id] received" before the task runs, outside its
            # context: the task id in the record's arguments names the job.
            if job == "-" and isinstance(record.args, dict) and "id" in record.args:
                job = job_of_task(record.args["id"])
            record.job_id = job
        if not hasattr(record, "pool"):
            record.pool = _pool
        return True


class _TaggedFormatter(logging.Formatter):
    """Repeats a record's tags on each line of a multi-line message (tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:
            return text
        tag = f"[job={getattr(record, 'job_id', '-')}] [pool={getattr(record, 'pool', '-')}] | "
        first, *rest = text.split("\n")
        return "\n".join([first, *(tag + line for line in rest)])


def _file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    path.touch(exist_ok=True)  # the handler opens lazily: both files exist from the start, as documented
    return ConcurrentRotatingFileHandler(
        str(path), mode="a", maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )


def setup_logging(
    log_dir: Path,
    level: str = "INFO",
    console: bool = False,
    max_bytes: int = 10_000_000,
    backups: int = 5,
) -> None:
    """Attach MAIE's shared, rotating file handlers to the root logger (once per process)."""
    root = logging.getLogger()
    if any(getattr(h, _MARK, False) for h in root.handlers):
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = _TaggedFormatter(FORMAT)
    app_log = _file_handler(log_dir / "app.log", max_bytes, backups)
    app_log.setLevel(level.upper())
    errors_log = _file_handler(log_dir / "errors.log", max_bytes, backups)
    errors_log.setLevel(logging.ERROR)
    handlers: list[logging.Handler] = [app_log, errors_log]
    if console:
        stream = logging.StreamHandler()
        stream.setLevel(level.upper())
        handlers.append(stream)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(JobIdFilter())
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.getLevelName(level.upper()):
        root.setLevel(level.upper())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Celery logs each task's return value at INFO ("succeeded in 0.1s: {...}"): keep results out
    # of the logs whatever a task returns.
    trace = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, _NoReturnValues) for f in trace.filters):
        trace.addFilter(_NoReturnValues())


class _NoReturnValues(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": "(result not logged)"}
        return True
