"""The previous MAIE's HTTP contract, translated onto MAIE's jobs.

features   raw_transcript, clean_transcript, summary, enhancement_metrics
           → MAIE's features enhance and summary (plus which outputs to return)
statuses   PENDING, PROCESSING_LLM, COMPLETE, FAILED ← MAIE's job states
templates  the previous template ids → MAIE's bundles
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from statistics import fmean

from maie.api.models import (
    ApiStatus,
    EnhancementMetrics,
    LlmVersion,
    Metrics,
    Results,
    StatusResponse,
    Versions,
)
from maie.errors import InputError
from maie.result import JobResult, JobStatus
from maie.submit import Job
from maie.templates import load_template

__all__ = [
    "OUTPUTS",
    "LEGACY_TEMPLATE_IDS",
    "parse_features",
    "resolve_template_id",
    "status_response",
]

# What each output of the previous contract needs MAIE to run; MAIE's own names pass as themselves.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "raw_transcript": (),
    "clean_transcript": ("enhance",),
    "summary": ("summary",),
    "enhancement_metrics": ("enhance",),
    "enhance": ("enhance",),
}
OUTPUTS_LABEL = "outputs"

# Template ids the previous MAIE's clients send. Its v2 bundles were Vietnamese.
LEGACY_TEMPLATE_IDS: dict[str, str] = {
    "meeting_notes_v1": "meeting_notes",
    "meeting_notes_v2": "meeting_notes_vi",
    "interview_transcript_v1": "interview",
    "interview_transcript_v2": "interview",
    "generic_summary_v1": "generic_summary",
    "generic_summary_en_v2": "generic_summary",
    "generic_summary_v2": "generic_summary_vi",
}

_STATUS: dict[str, ApiStatus] = {
    "PENDING": "PENDING",
    "RUNNING": "PROCESSING_LLM",
    "SUCCESS": "COMPLETE",
    "FAILURE": "FAILED",
    "CANCELLED": "FAILED",  # a terminal state old clients know, with error_code job_cancelled
}


def parse_features(
    values: Iterable[str] | str | None, default: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """(outputs asked for, MAIE features) from repeated fields, comma lists or a JSON array string.

    Unknown names pass through to `maie.submit`, which refuses them with the CLI's message.
    """
    items: list[str] = []
    for value in [values] if isinstance(values, str) else list(values or []):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
                items.extend(parsed)
                continue
        items.extend(part for part in text.split(","))
    outputs = [i.strip() for i in items if i.strip()] or list(default)
    features: list[str] = []
    for name in outputs:
        for feature in OUTPUTS.get(name, (name,)):
            if feature not in features:
                features.append(feature)
    return list(dict.fromkeys(outputs)), features


def resolve_template_id(template_id: str | None, templates_dir: Path | None) -> str | None:
    """MAIE's id for a previous MAIE template id; a bundle of that very id wins."""
    if not template_id or template_id not in LEGACY_TEMPLATE_IDS:
        return template_id or None
    try:
        load_template(template_id, templates_dir)
    except InputError:
        return LEGACY_TEMPLATE_IDS[template_id]
    return template_id


@lru_cache(maxsize=1)
def pipeline_version() -> str:
    try:
        return f"maie {metadata.version('maie')}"
    except metadata.PackageNotFoundError:
        return "maie"


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def status_response(job: Job) -> StatusResponse:
    """The job as the previous contract shows it; InputError for an unknown job."""
    result = job.result()
    if result is None:
        status = job.status()
        if status.state == "UNKNOWN":  # its records expired between the two reads
            raise InputError(f"no job {job.id} (unknown id, or its records expired)")
        if status.state in ("SUCCESS", "FAILURE", "CANCELLED"):
            # It ended between the two reads: answer with its result, never "COMPLETE" without one.
            result = job.result()
        if result is None:
            return _running(job, status)
    return _finished(job, result)


def _running(job: Job, status: JobStatus) -> StatusResponse:
    return StatusResponse(
        task_id=job.id,  # type: ignore[arg-type]  # pydantic parses the hex form
        status=(
            "PROCESSING_ASR" if status.state == "RUNNING" and status.stage == "asr" else _STATUS[status.state]
        ),
        stage=status.stage,
        submitted_at=_when(status.submitted_at),
        state=status.state,
        features=status.features,
        template_id=status.template_id,
        chunks_total=status.chunks_total,
        chunks_done=status.chunks_done,
    )


def _finished(job: Job, result: JobResult) -> StatusResponse:
    degraded = [c.index for c in result.chunks if c.degraded]
    response = StatusResponse(
        task_id=job.id,  # type: ignore[arg-type]
        status=_STATUS[result.status],
        submitted_at=_when(result.submitted_at),
        completed_at=_when(result.finished_at),
        state=result.status,
        features=result.features,
        template_id=result.template_id,
        chunks_total=len(result.chunks),
        chunks_done=len(result.chunks),
        chunks_degraded=degraded,
    )
    if result.error is not None:
        response.error = result.error.message
        response.error_code = result.error.code
        response.stage = result.error.stage
        return response
    outputs = _outputs(job, result)
    rates = [c.edit_rate for c in result.chunks if c.edit_rate is not None]
    edit_rate = round(fmean(rates), 4) if rates else None
    response.results = Results(
        raw_transcript=(
            (result.raw_transcript.text if result.raw_transcript else job.raw_text())
            if "raw_transcript" in outputs
            else None
        ),
        clean_transcript=result.enhanced_text if "clean_transcript" in outputs else None,
        summary=result.summary if "summary" in outputs else None,
        enhancement_metrics=(
            EnhancementMetrics(
                edit_rate_cleaning=edit_rate,
                chunks_total=len(result.chunks),
                chunks_degraded=degraded,
                chunks_failed=[c.index for c in result.chunks if c.failed],
                chunk_edit_rates=[c.edit_rate for c in result.chunks],
            )
            if "enhancement_metrics" in outputs
            else None
        ),
    )
    elapsed = (
        round(result.finished_at - result.submitted_at, 3)
        if result.finished_at is not None and result.submitted_at is not None
        else None
    )
    response.metrics = Metrics(
        processing_time_seconds=elapsed, edit_rate_cleaning=edit_rate, stages=result.metrics
    )
    if result.raw_transcript is not None:  # a recording: what recognition measured
        asr = result.raw_transcript.metrics
        response.metrics.input_duration_seconds = asr.audio_seconds
        response.metrics.rtf = asr.real_time_factor
    main = result.versions.get("summary") or result.versions.get("enhance")
    response.versions = Versions(
        pipeline_version=pipeline_version(),
        llm=LlmVersion(name=main.model, backend=main.backend) if main else None,
        enhance=result.versions.get("enhance"),
        summary=result.versions.get("summary"),
    )
    return response


def _outputs(job: Job, result: JobResult) -> set[str]:
    """The outputs the client asked for; for jobs submitted otherwise, what their features make."""
    asked = job.labels().get(OUTPUTS_LABEL)
    if asked:
        outputs = set(asked.split(","))
        if "enhance" in outputs:
            outputs.add("clean_transcript")
        return outputs
    made = {"enhance": "clean_transcript", "summary": "summary"}
    return {made[f] for f in result.features if f in made}
