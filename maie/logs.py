"""Logging: `logs/app.log` and `logs/errors.log`, rotating, every line of a job carrying its job id.

Transcript text is never logged at INFO: log ids, counts and sizes. Secrets never reach a log
because settings hold them as `SecretStr`, which prints as `**********`.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
from pathlib import Path

__all__ = ["job_id_var", "setup_logging", "JobIdFilter"]

job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("maie_job_id", default="-")

FORMAT = "%(asctime)s %(levelname)s [job=%(job_id)s] %(processName)s %(name)s: %(message)s"
_MARK = "_maie_handler"


class JobIdFilter(logging.Filter):
    """Stamps each record with the job id of the task running in this thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = job_id_var.get()
        return True


def setup_logging(log_dir: Path, level: str = "INFO", console: bool = False) -> None:
    """Attach MAIE's rotating file handlers to the root logger (once per process)."""
    root = logging.getLogger()
    if any(getattr(h, _MARK, False) for h in root.handlers):
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = []
    app_log = logging.handlers.RotatingFileHandler(
        log_dir / "app.log", maxBytes=10_000_000, backupCount=5, encoding="utf-8"
    )
    app_log.setLevel(level.upper())
    errors_log = logging.handlers.RotatingFileHandler(
        log_dir / "errors.log", maxBytes=10_000_000, backupCount=5, encoding="utf-8"
    )
    errors_log.setLevel(logging.ERROR)
    handlers += [app_log, errors_log]
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
    # Libraries log request bodies at DEBUG; keep them out of MAIE's logs below WARNING.
    for noisy in ("openai", "httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Celery logs each task's return value at INFO ("succeeded in 0.1s: {...}"): a job's result
    # holds transcript text, so drop it from every handler.
    trace = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, _NoReturnValues) for f in trace.filters):
        trace.addFilter(_NoReturnValues())


class _NoReturnValues(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": "(result not logged)"}
        return True
