"""The HTTP API's request and response bodies, shaped as the previous MAIE's clients read them.

Field names are the previous contract's English names (`task_id`, `status`, `results.clean_transcript`,
...); MAIE's own additions (`state`, `chunks_done`, ...) sit next to them and old clients ignore them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from maie.result import StageMetrics, StageVersion

__all__ = [
    "ApiStatus",
    "ErrorBody",
    "ErrorResponse",
    "ProcessTextRequest",
    "ProcessResponse",
    "Results",
    "EnhancementMetrics",
    "Metrics",
    "LlmVersion",
    "Versions",
    "StatusResponse",
    "TemplateInfo",
    "TemplateDetail",
    "TemplatesResponse",
    "ModelInfo",
    "ModelsResponse",
    "HealthResponse",
]

ApiStatus = Literal["PENDING", "PROCESSING_ASR", "PROCESSING_LLM", "COMPLETE", "FAILED"]

EXAMPLE_ID = "c4b3a216-3e7f-4d2a-8f9a-1b9c8d7e6a5b"


class ErrorBody(BaseModel):
    code: str = Field(description="MAIE's error code, e.g. input_error, queue_full, unauthorized.")
    message: str = Field(description="One line saying what is wrong.")


class ErrorResponse(BaseModel):
    """Every error: `detail` as the previous MAIE answered, `error` as its documentation described."""

    detail: str
    error: ErrorBody

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "detail": "file 'meeting.txt' is empty (0 bytes)",
                "error": {"code": "input_error", "message": "file 'meeting.txt' is empty (0 bytes)"},
            }
        }
    )


class ProcessTextRequest(BaseModel):
    text: str = Field(description="The transcript itself, in any format MAIE reads.")
    features: list[str] | str | None = Field(
        default=None,
        description=(
            "Outputs wanted: clean_transcript, summary, raw_transcript, enhancement_metrics "
            "(MAIE's own enhance and summary are accepted too). A list, or one comma-separated "
            'string. Default: ["summary"].'
        ),
    )
    template_id: str | None = Field(
        default=None, description="Summary template; MAIE's default template when left out."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": "Ann: so we ship on friday\nBob: ok i will tell the client",
                    "features": ["clean_transcript", "summary"],
                    "template_id": "meeting_notes",
                }
            ]
        }
    )


class ProcessResponse(BaseModel):
    task_id: UUID = Field(description="The job's id; poll GET /v1/status/{task_id}.")
    status: Literal["PENDING"] = "PENDING"

    model_config = ConfigDict(json_schema_extra={"example": {"task_id": EXAMPLE_ID, "status": "PENDING"}})


class EnhancementMetrics(BaseModel):
    edit_rate_cleaning: float | None = Field(
        default=None, description="Mean word edit rate of the enhanced chunks (0: unchanged)."
    )
    chunks_total: int = 0
    chunks_degraded: list[int] = Field(
        default_factory=list, description="Chunks whose enhancement was unfaithful: their raw text stands."
    )
    chunks_failed: list[int] = Field(
        default_factory=list, description="Chunks that could not be enhanced (ENHANCE_ON_FAILURE=raw)."
    )
    chunk_edit_rates: list[float | None] = Field(default_factory=list)


class Results(BaseModel):
    raw_transcript: str | None = Field(default=None, description="The transcript as MAIE read it.")
    clean_transcript: str | None = Field(default=None, description="The enhanced transcript.")
    summary: dict[str, Any] | None = Field(
        default=None, description="The summary, valid against the template's schema."
    )
    enhancement_metrics: EnhancementMetrics | None = None


class Metrics(BaseModel):
    processing_time_seconds: float | None = Field(default=None, description="From submission to the end.")
    edit_rate_cleaning: float | None = None
    input_duration_seconds: float | None = Field(
        default=None, description="Audio only; null for transcripts."
    )
    rtf: float | None = Field(default=None, description="Audio only; null for transcripts.")
    stages: dict[str, StageMetrics] = Field(
        default_factory=dict, description="Per stage: wall time, tokens, chunks."
    )


class LlmVersion(BaseModel):
    name: str = Field(description="The model that wrote the summary (or the enhanced text).")
    backend: str


class Versions(BaseModel):
    pipeline_version: str
    llm: LlmVersion | None = None
    enhance: StageVersion | None = None
    summary: StageVersion | None = None


class StatusResponse(BaseModel):
    task_id: UUID
    status: ApiStatus = Field(
        description="PENDING, PROCESSING_ASR (recordings), PROCESSING_LLM, COMPLETE or FAILED "
        "(cancelled jobs too)."
    )
    error: str | None = Field(default=None, description="Why the job failed, in one line.")
    error_code: str | None = Field(default=None, description="e.g. backend_unavailable, job_cancelled.")
    stage: str | None = Field(
        default=None, description="Running: the stage at work. Failed: the stage that failed."
    )
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    versions: Versions | None = None
    metrics: Metrics | None = None
    results: Results | None = None
    # MAIE's own fields.
    state: str = Field(description="MAIE's state: PENDING, RUNNING, SUCCESS, FAILURE or CANCELLED.")
    features: list[str] = Field(default_factory=list, description="MAIE's features: enhance, summary.")
    template_id: str | None = None
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_degraded: list[int] = Field(default_factory=list)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": EXAMPLE_ID,
                    "status": "COMPLETE",
                    "submitted_at": "2025-10-20T07:18:17.637000Z",
                    "completed_at": "2025-10-20T07:18:45.123000Z",
                    "results": {
                        "clean_transcript": "Ann: So we ship on Friday.\nBob: OK, I will tell the client.",
                        "summary": {"title": "Release date", "decisions": ["Ship on Friday"]},
                    },
                    "state": "SUCCESS",
                    "features": ["enhance", "summary"],
                    "template_id": "meeting_notes",
                    "chunks_total": 1,
                    "chunks_done": 1,
                },
                {
                    "task_id": EXAMPLE_ID,
                    "status": "FAILED",
                    "error": "chunk 0: cannot connect to http://llm-a:8000/v1",
                    "error_code": "backend_unavailable",
                    "stage": "enhance",
                    "state": "FAILURE",
                },
            ]
        }
    )


class TemplateInfo(BaseModel):
    id: str
    name: str
    description: str
    schema_url: str
    parameters: dict[str, Any] = Field(default_factory=dict, description="The schema's properties.")
    example: dict[str, Any] | None = None
    language: str
    required_fields: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list, description="Previous MAIE template ids that map here.")


class TemplateDetail(TemplateInfo):
    prompt_template: str
    schema_data: dict[str, Any]


class TemplatesResponse(BaseModel):
    templates: list[TemplateInfo]


class ModelInfo(BaseModel):
    id: str = Field(description="The task: enhance or summary.")
    name: str = Field(description="The model the task's pool uses.")
    description: str
    type: str = "LLM"
    version: str = ""
    supported_languages: list[str] = Field(default_factory=list)
    backend: str
    endpoint: str = Field(description="The task's endpoint (passwords masked), or in-process.")
    api_key: str = Field(description="Whether a key is set; never the key.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["healthy", "unhealthy"] = Field(
        description="healthy: Redis answers and each queue has a pool consuming it."
    )
    version: str
    redis_connected: bool
    queue_depth: int = Field(description="Tasks waiting, all queues together.")
    worker_active: bool = Field(description="Every queue has at least one worker.")
    queues: dict[str, int] = Field(default_factory=dict, description="Tasks waiting per queue.")
    pools: dict[str, list[str]] = Field(default_factory=dict, description="Workers seen per queue.")
