"""The routes of jobs: submit a transcript or a recording, read a job's status, cancel it."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, File, Form, Header, Response, UploadFile
from starlette.responses import JSONResponse

from maie.api.compat import OUTPUTS_LABEL, parse_features, resolve_template_id, status_response
from maie.api.errors import error_response
from maie.api.models import ErrorResponse, ProcessResponse, ProcessTextRequest, StatusResponse
from maie.api.openapi import CURL, api_key, errors
from maie.errors import InputError
from maie.inputs import TranscriptText
from maie.settings import Settings
from maie.submit import Job, submit

__all__ = ["jobs_router"]

log = logging.getLogger("maie.api")

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", description="The same key returns the same job.")
]


def jobs_router(s: Settings) -> APIRouter:
    """The routes that submit, show and cancel jobs, with the settings `s`."""
    router = APIRouter()
    # Both ways to submit answer alike: 202 with the job's id, or the same error answers.
    submit_route = partial(
        router.post,
        status_code=202,
        response_model=ProcessResponse,
        responses=errors(400, 401, 403, 413, 422, 429, 503),
        tags=["Processing"],
        dependencies=[api_key],
    )

    @submit_route(
        "/v1/process",
        summary="Submit a transcript file or a recording",
        description=(
            "Multipart upload of a transcript (plain text, `Speaker: text` lines, Whisper-style JSON, "
            "SRT, VTT) or a recording (WAV, MP3, M4A, FLAC, OGG/Opus, told apart by content; "
            "recognised by the asr pool) with repeated `features` fields and a `template_id`. "
            "The file goes to `maie.submit` exactly as `maie submit FILE` sends it. `asr_backend`, "
            "`enable_diarization`, `enable_vad` and `vad_threshold` of the previous MAIE are accepted "
            "and not used (recognition follows the asr pool's ASR__* settings)." + CURL
        ),
    )
    def process(
        response: Response,
        file: Annotated[UploadFile, File(description="The transcript file or recording.")],
        features: Annotated[
            list[str] | None,
            Form(
                description="Repeat the field: raw_transcript, clean_transcript, summary, "
                "enhancement_metrics. Default: clean_transcript and summary."
            ),
        ] = None,
        template_id: Annotated[str | None, Form(description="Summary template id.")] = None,
        asr_backend: Annotated[str | None, Form(description="Accepted, not used.")] = None,
        enable_diarization: Annotated[bool | None, Form(description="Accepted, not used.")] = None,
        enable_vad: Annotated[bool | None, Form(description="Accepted, not used.")] = None,
        vad_threshold: Annotated[float | None, Form(description="Accepted, not used.")] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> ProcessResponse:
        key = _check_idempotency_key(idempotency_key)
        outputs, chosen = parse_features(features, ("clean_transcript", "summary"))
        name = _safe_name(file.filename)
        with tempfile.TemporaryDirectory(prefix="maie-") as tmp:
            path = Path(tmp) / name
            with path.open("wb") as out:
                shutil.copyfileobj(file.file, out, 1 << 20)
            try:
                job = submit(
                    path,
                    template_id=resolve_template_id(template_id, s.templates_dir),
                    features=chosen,
                    idempotency_key=key,
                    labels={OUTPUTS_LABEL: ",".join(outputs)},
                    settings=s,
                )
            except InputError as exc:
                # Name the file as the client did, never the server's temporary path.
                raise InputError(str(exc).replace(repr(str(path)), repr(name))) from None
        return _accept(job, response)

    @submit_route("/v1/process_text", summary="Submit a transcript as JSON")
    def process_text(
        response: Response,
        body: Annotated[ProcessTextRequest, Body()],
        idempotency_key: IdempotencyKey = None,
    ) -> ProcessResponse:
        key = _check_idempotency_key(idempotency_key)
        outputs, chosen = parse_features(body.features, ("summary",))
        job = submit(
            TranscriptText(body.text),
            template_id=resolve_template_id(body.template_id, s.templates_dir),
            features=chosen,
            idempotency_key=key,
            labels={OUTPUTS_LABEL: ",".join(outputs)},
            settings=s,
        )
        return _accept(job, response)

    # The two routes that name one job: its status, its cancellation.
    job_route = partial(
        router.api_route,
        "/v1/status/{task_id}",
        response_model=StatusResponse,
        responses={
            **errors(401, 403, 422, 503),
            404: {"model": ErrorResponse, "description": "No such job."},
        },
        tags=["Status"],
        dependencies=[api_key],
    )

    @job_route(methods=["GET"], summary="A job's status and, once it ended, its results")
    def status(task_id: uuid.UUID) -> StatusResponse | JSONResponse:
        try:
            return status_response(Job(task_id.hex, s))
        except InputError as exc:
            return error_response(404, "not_found", str(exc))

    @job_route(
        methods=["DELETE"],
        summary="Cancel a job",
        description="Queued tasks are revoked; running LLM calls end at their timeout. A job that "
        "already ended keeps its outcome.",
    )
    def cancel(task_id: uuid.UUID) -> StatusResponse | JSONResponse:
        job = Job(task_id.hex, s)
        if job.status().state == "UNKNOWN":
            return error_response(404, "not_found", f"no job {job.id} (unknown id, or its records expired)")
        job.cancel()
        return status_response(job)

    return router


def _accept(job: Job, response: Response) -> ProcessResponse:
    log.info("job %s submitted over HTTP", job.id, extra={"job_id": job.id})
    response.headers["Location"] = f"/v1/status/{uuid.UUID(job.id)}"
    return ProcessResponse(task_id=uuid.UUID(job.id))


def _check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"[\x21-\x7e]{1,200}", value):
        raise InputError("Idempotency-Key must be 1 to 200 visible ASCII characters")
    return value


def _safe_name(filename: str | None) -> str:
    """The upload's base name, reduced to safe characters (its extension tells the format)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    stem, dot, suffix = safe.rpartition(".")
    if dot and len(suffix) <= 8:
        return (stem[:48] or "upload") + "." + suffix
    return safe[:48] or "upload"
