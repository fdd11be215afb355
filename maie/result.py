"""What a job returns: `JobResult`, built from the job's records once its last stage ends."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maie.errors import JobFailed
from maie.job_meta import JobMeta

__all__ = [
    "ChunkRecord",
    "StageVersion",
    "StageMetrics",
    "JobError",
    "JobResult",
    "JobStatus",
    "RawSegment",
    "RawTranscript",
    "build_result",
    "version_of",
]


class ChunkRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")  # stored records also hold text and timings

    index: int
    degraded: bool = False  # the model's reply was unfaithful; the raw text stands in
    edit_rate: float | None = None
    failed: bool = False  # the chunk could not be enhanced at all; the raw text stands in
    error: str | None = None
    attempts: int = 0


class StageVersion(BaseModel):
    backend: str
    base_url: str
    model: str
    prompt_sha256: str
    schema_sha256: str | None = None
    # Enhancement only: "free" or "constrained" decoding (ENHANCE_MODE).
    decoding: str | None = None


class StageMetrics(BaseModel):
    wall_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0


class JobError(BaseModel):
    stage: str  # "submit" | "enhance" | "summary"
    code: str  # the MaieError code, e.g. "backend_rejected"
    message: str
    chunk: int | None = None


class RawSegment(BaseModel):
    start: float  # seconds from the start of the recording
    end: float
    text: str
    confidence: float  # exp(average token log-probability)
    no_speech_prob: float


class AsrMetrics(BaseModel):
    audio_seconds: float
    wall_seconds: float  # from the first recognition task's start to the stitched transcript
    real_time_factor: float  # wall_seconds / audio_seconds
    compute_seconds: float  # recognition time summed over the parts (parallel parts overlap)
    parts: int
    language: str | None = None
    language_probability: float | None = None


class AsrVersion(BaseModel):
    engine: str
    model: str
    device: str
    compute_type: str
    beam_size: int
    vad: bool


class RawTranscript(BaseModel):
    """The recogniser's output for an audio job: the text the LLM stages started from, timed."""

    text: str
    segments: list[RawSegment]
    metrics: AsrMetrics
    version: AsrVersion


class JobResult(BaseModel):
    job_id: str
    status: Literal["SUCCESS", "FAILURE", "CANCELLED"]
    features: list[str]
    template_id: str | None = None
    raw_transcript: RawTranscript | None = None  # audio jobs only
    enhanced_text: str | None = None
    summary: dict[str, Any] | None = None
    chunks: list[ChunkRecord] = Field(default_factory=list)
    versions: dict[str, StageVersion] = Field(default_factory=dict)
    metrics: dict[str, StageMetrics] = Field(default_factory=dict)
    error: JobError | None = None
    submitted_at: float | None = None  # Unix time
    finished_at: float | None = None


class JobStatus(BaseModel):
    job_id: str
    state: Literal["PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED", "UNKNOWN"]
    chunks_total: int = 0
    chunks_done: int = 0
    stage: str | None = None
    error: JobError | None = None
    submitted_at: float | None = None  # Unix time
    features: list[str] = Field(default_factory=list)
    template_id: str | None = None


def version_of(
    backend: Any, *, prompt: str, schema_sha256: str | None = None, decoding: str | None = None
) -> StageVersion:
    """Which backend, endpoint, model, prompt and decoding produced a stage's output."""
    return StageVersion(
        backend=backend.kind,
        base_url=backend.endpoint,
        model=backend.model,
        prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
        schema_sha256=schema_sha256,
        decoding=decoding,
    )


def build_result(
    job_id: str,
    meta: JobMeta,
    enhanced: dict[int, dict[str, Any]],
    raw_transcript: dict[str, Any] | None = None,
) -> JobResult:
    """The job's result from its records: the enhanced chunks in order (a missing chunk is an
    error, never a gap) and, for a recording, the transcript recognition found."""
    n = meta.n_chunks
    result = JobResult(
        job_id=job_id,
        status="SUCCESS",
        features=list(meta.features),
        template_id=meta.template_id,
        submitted_at=meta.created_at,
    )
    if meta.input == "audio":
        if raw_transcript is None:
            raise JobFailed("the recognised transcript is missing from the store")
        result.raw_transcript = RawTranscript.model_validate(raw_transcript)
    if "enhance" not in meta.features:
        return result
    missing = [i for i in range(n) if i not in enhanced]
    if missing:
        raise JobFailed(f"enhanced chunks missing from the store: {missing[:20]}")
    ordered = [enhanced[i] for i in range(n)]
    result.enhanced_text = "\n".join(r["text"] for r in ordered)
    result.chunks = [ChunkRecord.model_validate(r) for r in ordered]
    # Each chunk record says what enhanced it (one pool normally serves a whole job: the first
    # chunk's stands for all); jobs written by earlier releases kept it in the job's record.
    version = next((r["version"] for r in ordered if r.get("version")), meta.version_enhance)
    if version is not None:
        result.versions["enhance"] = StageVersion.model_validate(version)
    result.metrics["enhance"] = StageMetrics(
        wall_seconds=round(max(r["finished_at"] for r in ordered) - min(r["started_at"] for r in ordered), 4),
        prompt_tokens=sum(r["prompt_tokens"] for r in ordered),
        completion_tokens=sum(r["completion_tokens"] for r in ordered),
        chunks=n,
    )
    return result
