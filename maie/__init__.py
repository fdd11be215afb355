"""MAIE: speech transcripts to clean text and structured summaries, as a Celery pipeline.

    import maie
    job = maie.submit("meeting.srt", template_id="meeting_notes")
    result = job.wait(timeout=600)

`celery -A maie worker -Q enhance` and `-Q summary` run the two worker pools.
"""

from maie.celery import app
from maie.errors import (
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    InputError,
    JobCancelled,
    JobFailed,
    MaieError,
    QueueFull,
)
from maie.result import JobResult, JobStatus
from maie.settings import Settings, load_settings
from maie.submit import Job, submit

__all__ = [
    "app",
    "submit",
    "Job",
    "JobResult",
    "JobStatus",
    "Settings",
    "load_settings",
    "MaieError",
    "ConfigError",
    "InputError",
    "BackendUnavailable",
    "BackendRejected",
    "QueueFull",
    "JobFailed",
    "JobCancelled",
]
