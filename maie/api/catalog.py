"""The routes of what the service offers: its summary templates and each task's model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from maie.api.compat import LEGACY_TEMPLATE_IDS, resolve_template_id
from maie.api.errors import error_response
from maie.api.models import (
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    TemplateDetail,
    TemplateInfo,
    TemplatesResponse,
)
from maie.api.openapi import api_key, errors
from maie.backends.kinds import kind_of
from maie.errors import InputError
from maie.names import TASKS, Task
from maie.settings import Settings
from maie.templates import Template, list_templates, load_template

__all__ = ["catalog_router"]


def catalog_router(s: Settings) -> APIRouter:
    """The routes that list templates and models, with the settings `s`."""
    router = APIRouter()

    @router.get("/v1/templates", response_model=TemplatesResponse, tags=["Templates"], summary="Templates")
    def templates() -> TemplatesResponse:
        return TemplatesResponse(templates=[_template_info(t) for t in list_templates(s.templates_dir)])

    template_responses: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "No such template."}
    }

    @router.get(
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

    @router.get(
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

    @router.get(
        "/v1/models",
        response_model=ModelsResponse,
        responses=errors(401, 403),
        tags=["Models"],
        dependencies=[api_key],
        summary="Each task's model and endpoint (keys never shown)",
    )
    def models() -> ModelsResponse:
        return ModelsResponse(models=[_model_info(s, task) for task in TASKS])

    return router


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


def _model_info(s: Settings, task: Task) -> ModelInfo:
    about = kind_of(s).describe(task, s)
    return ModelInfo(
        id=task,
        name=about.model,
        description=f"{task} pool: {about.summary}",
        supported_languages=["en", "vi"],
        backend=about.kind,
        endpoint=about.endpoint,
        api_key=about.api_key,
    )
