"""The HTTP API's routes: a thin layer over `maie.submit` and `maie.Job`.

Nothing here queues, reads or writes a job any other way than the Python API and the CLI do, and
no state is kept between requests (everything is in Redis), so instances can run side by side
behind a load balancer. Routes are plain functions: FastAPI runs them in its thread pool, since
`submit` and `Job` talk to Redis synchronously.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import Body, FastAPI, File, Form, Header, Request, Response, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from kombu.exceptions import KombuError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from maie.api.auth import API_KEY_HEADER, ApiKeyMiddleware
from maie.api.compat import (
    LEGACY_TEMPLATE_IDS,
    OUTPUTS_LABEL,
    parse_features,
    pipeline_version,
    resolve_template_id,
    status_response,
)
from maie.api.errors import error_response, maie_error_response
from maie.api.limits import BodyLimitMiddleware
from maie.api.models import (
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    ProcessResponse,
    ProcessTextRequest,
    StatusResponse,
    TemplateDetail,
    TemplateInfo,
    TemplatesResponse,
)
from maie.celery import client_app as app_for
from maie.errors import BackendUnavailable, ConfigError, InputError, MaieError
from maie.inputs import TranscriptText
from maie.logs import set_pool, setup_logging
from maie.names import QUEUES, TASKS
from maie.settings import Settings, load_settings, mask_url
from maie.submit import Job, queue_depths, submit
from maie.templates import Template, list_templates, load_template

__all__ = ["create_app", "INSECURE_ENV"]

log = logging.getLogger("maie.api")

# Set by `maie api --insecure` for the server processes it starts: serve without a key.
INSECURE_ENV = "MAIE_API_INSECURE"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Bad input (the CLI's one-line message); nothing was queued.",
        401: "X-API-Key header missing.",
        403: "X-API-Key does not match SECRET_API_KEY.",
        413: "Request body over API_MAX_UPLOAD_BYTES.",
        422: "Request malformed (a required field missing, a field of the wrong type).",
        429: "A queue is over QUEUE_MAX_DEPTH; retry after Retry-After seconds. Nothing was queued.",
        503: "Redis unreachable; retry after Retry-After seconds.",
    }.items()
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _ERRORS[c] for c in codes}


# The answers of the routes that name one job (its status, its cancellation).
_JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_errors(401, 403, 422, 503),
    404: {"model": ErrorResponse, "description": "No such job."},
}

# Declared for the OpenAPI document (and /docs' Authorize button); ApiKeyMiddleware enforces it.
_api_key = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))

_CURL = """
```bash
curl -X POST "http://localhost:8000/v1/process" \\
  -H "X-API-Key: $SECRET_API_KEY" \\
  -F "file=@meeting.srt" \\
  -F "features=clean_transcript" \\
  -F "features=summary" \\
  -F "template_id=meeting_notes"
```
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application; refuses to start without SECRET_API_KEY unless started --insecure."""
    s = settings or load_settings()
    key = s.secret_api_key.get_secret_value() if s.secret_api_key else ""
    if not key and os.environ.get(INSECURE_ENV) != "1":
        raise ConfigError(
            "SECRET_API_KEY is not set: the API does not start without a key "
            "(or start it with `maie api --insecure`, which serves on 127.0.0.1 only)"
        )
    # The same app.log and errors.log as the pools, each line tagged pool=api.
    set_pool("api")
    setup_logging(s.log_dir, s.log_level, max_bytes=s.log_max_bytes, backups=s.log_backup_count)
    api = FastAPI(
        title="MAIE API",
        version=pipeline_version().removeprefix("maie ").strip() or "0",
        summary="Speech transcripts to clean text and structured summaries, over HTTP.",
        description=(
            "Submit a transcript, poll its status, read its results. Send the key in the "
            "`X-API-Key` header on every `/v1/` route except `/v1/templates`." + _CURL
        ),
    )
    api.add_middleware(BodyLimitMiddleware, max_bytes=s.api_max_upload_bytes)
    api.add_middleware(ApiKeyMiddleware, expected=key.encode() if key else None)
    _install_error_handlers(api)
    _add_routes(api, s)
    return api


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(MaieError)
    async def on_maie_error(request: Request, exc: MaieError) -> JSONResponse:
        return maie_error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return error_response(422, "validation_error", problems or "invalid request")

    @api.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @api.exception_handler(redis.RedisError)
    async def on_redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
        return maie_error_response(_unavailable(exc))

    @api.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log; the client gets one line.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; the server log has the details")


def _unavailable(exc: redis.RedisError) -> MaieError:
    return BackendUnavailable(f"cannot reach Redis: {exc}")


def _add_routes(api: FastAPI, s: Settings) -> None:
    def accept(job: Job, response: Response) -> ProcessResponse:
        log.info("job %s submitted over HTTP", job.id, extra={"job_id": job.id})
        response.headers["Location"] = f"/v1/status/{uuid.UUID(job.id)}"
        return ProcessResponse(task_id=uuid.UUID(job.id))

    def check_idempotency_key(value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[\x21-\x7e]{1,200}", value):
            raise InputError("Idempotency-Key must be 1 to 200 visible ASCII characters")
        return value

    @api.post(
        "/v1/process",
        status_code=202,
        response_model=ProcessResponse,
        responses=_errors(400, 401, 403, 413, 422, 429, 503),
        tags=["Processing"],
        dependencies=[_api_key],
        summary="Submit a transcript file or a recording",
        description=(
            "Multipart upload of a transcript (plain text, `Speaker: text` lines, Whisper-style JSON, "
            "SRT, VTT) or a recording (WAV, MP3, M4A, FLAC, OGG/Opus, told apart by content; "
            "recognised by the asr pool) with repeated `features` fields and a `template_id`. "
            "The file goes to `maie.submit` exactly as `maie submit FILE` sends it. `asr_backend`, "
            "`enable_diarization`, `enable_vad` and `vad_threshold` of the previous MAIE are accepted "
            "and not used (recognition follows the asr pool's ASR__* settings)." + _CURL
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
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", description="The same key returns the same job.")
        ] = None,
    ) -> ProcessResponse:
        key = check_idempotency_key(idempotency_key)
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
        return accept(job, response)

    @api.post(
        "/v1/process_text",
        status_code=202,
        response_model=ProcessResponse,
        responses=_errors(400, 401, 403, 413, 422, 429, 503),
        tags=["Processing"],
        dependencies=[_api_key],
        summary="Submit a transcript as JSON",
    )
    def process_text(
        response: Response,
        body: Annotated[ProcessTextRequest, Body()],
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", description="The same key returns the same job.")
        ] = None,
    ) -> ProcessResponse:
        key = check_idempotency_key(idempotency_key)
        outputs, chosen = parse_features(body.features, ("summary",))
        job = submit(
            TranscriptText(body.text),
            template_id=resolve_template_id(body.template_id, s.templates_dir),
            features=chosen,
            idempotency_key=key,
            labels={OUTPUTS_LABEL: ",".join(outputs)},
            settings=s,
        )
        return accept(job, response)

    @api.get(
        "/v1/status/{task_id}",
        response_model=StatusResponse,
        responses=_JOB_RESPONSES,
        tags=["Status"],
        dependencies=[_api_key],
        summary="A job's status and, once it ended, its results",
    )
    def status(task_id: uuid.UUID) -> StatusResponse | JSONResponse:
        try:
            return status_response(Job(task_id.hex, s))
        except InputError as exc:
            return error_response(404, "not_found", str(exc))

    @api.delete(
        "/v1/status/{task_id}",
        response_model=StatusResponse,
        responses=_JOB_RESPONSES,
        tags=["Status"],
        dependencies=[_api_key],
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

    @api.get("/v1/templates", response_model=TemplatesResponse, tags=["Templates"], summary="Templates")
    def templates() -> TemplatesResponse:
        return TemplatesResponse(templates=[_template_info(t) for t in list_templates(s.templates_dir)])

    template_responses: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "No such template."}
    }

    @api.get(
        "/v1/templates/{template_id}",
        response_model=TemplateDetail,
        responses=template_responses,
        tags=["Templates"],
        summary="A template: prompt, schema, example",
    )
    def template_detail(template_id: str) -> TemplateDetail | JSONResponse:
        try:
            t = load_template(resolve_template_id(template_id, s.templates_dir) or "", s.templates_dir)
        except InputError as exc:
            return error_response(404, "not_found", str(exc))
        return TemplateDetail(
            **_template_info(t).model_dump(), prompt_template=t.prompt_source, schema_data=t.schema
        )

    @api.get(
        "/v1/templates/{template_id}/schema",
        response_model=dict[str, Any],
        responses=template_responses,
        tags=["Templates"],
        summary="A template's JSON Schema",
    )
    def template_schema(template_id: str) -> dict[str, Any] | JSONResponse:
        try:
            t = load_template(resolve_template_id(template_id, s.templates_dir) or "", s.templates_dir)
        except InputError as exc:
            return error_response(404, "not_found", str(exc))
        return t.schema

    @api.get(
        "/v1/models",
        response_model=ModelsResponse,
        responses=_errors(401, 403),
        tags=["Models"],
        dependencies=[_api_key],
        summary="Each task's model and endpoint (keys never shown)",
    )
    def models() -> ModelsResponse:
        return ModelsResponse(models=[_model_info(s, task) for task in TASKS])

    @api.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "Redis unreachable."}},
        tags=["Health"],
        summary="Redis, queue depths, the pools consuming each queue",
    )
    def health(response: Response) -> HealthResponse:
        report = _health(s)
        if not report.redis_connected:
            response.status_code = 503
        return report


def _safe_name(filename: str | None) -> str:
    """The upload's base name, reduced to safe characters (its extension tells the format)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    stem, dot, suffix = safe.rpartition(".")
    if dot and len(suffix) <= 8:
        return (stem[:48] or "upload") + "." + suffix
    return safe[:48] or "upload"


def _template_info(t: Template) -> TemplateInfo:
    title = t.schema.get("title")
    return TemplateInfo(
        id=t.id,
        name=title if isinstance(title, str) else t.id.replace("_", " ").title(),
        description=t.description or str(t.schema.get("description", "")),
        schema_url=f"/v1/templates/{t.id}/schema",
        parameters=dict(t.schema.get("properties", {})),
        example=t.example,
        language=t.language,
        required_fields=t.required_fields,
        aliases=sorted(old for old, new in LEGACY_TEMPLATE_IDS.items() if new == t.id),
    )


def _model_info(s: Settings, task: str) -> ModelInfo:
    languages = ["en", "vi"]
    if s.llm_backend == "vllm_server":
        ep = s.endpoint(task)  # type: ignore[arg-type]
        return ModelInfo(
            id=task,
            name=ep.model_name or "(the model the server serves)",
            description=f"{task} pool: vLLM OpenAI-compatible server",
            supported_languages=languages,
            backend=s.llm_backend,
            endpoint=mask_url(ep.base_url),
            api_key="set (masked)" if ep.api_key else "not set",
        )
    t = s.task_settings(task)  # type: ignore[arg-type]
    return ModelInfo(
        id=task,
        name=t.model,
        description=f"{task} pool: in-process vLLM engine",
        supported_languages=languages,
        backend=s.llm_backend,
        endpoint="in-process",
        api_key="not used",
    )


def _health(s: Settings) -> HealthResponse:
    depths: dict[str, int] = {}
    try:
        depths = queue_depths(s)
        connected = True
    except (redis.RedisError, BackendUnavailable):  # BackendUnavailable: RabbitMQ unreachable
        connected = False
    pools: dict[str, list[str]] = {q: [] for q in QUEUES}
    if connected:
        # Workers answer a broadcast on the broker; one second is plenty on a healthy network.
        try:
            replies = app_for(s).control.inspect(timeout=1.0).active_queues() or {}
        except (KombuError, redis.RedisError, OSError) as exc:
            log.warning("health: cannot ask the workers: %s", exc)
            replies = {}
        for worker, queues in sorted(replies.items()):
            for q in queues or []:
                if q.get("name") in pools:
                    pools[q["name"]].append(worker)
    # The asr pool serves recordings only: a deployment without one is healthy until a recording
    # waits on its queue with no worker to take it.
    active = all(pools[q] for q in QUEUES if q != "asr") and bool(pools["asr"] or not depths.get("asr"))
    return HealthResponse(
        status="healthy" if connected and active else "unhealthy",
        version=pipeline_version(),
        redis_connected=connected,
        queue_depth=sum(depths.values()),
        worker_active=active,
        queues=depths,
        pools=pools,
    )
