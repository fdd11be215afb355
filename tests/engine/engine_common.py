"""What the engine-tier job tests share: a template with short bounded fields, worker settings, a job.

The model is the tiny random one (its words are noise, so enhancement ends degraded — that is the
faithfulness check doing its job); what these tests prove is the plumbing: each pool builds its own
engine from its own settings once, constrained decoding makes the summary schema-valid, and each
task's requests reach its own server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import base_env

from maie import JobResult, submit
from maie.settings import load_settings

TRANSCRIPT = (
    "Anna: so the budget for the new remote is twenty euros\n"
    "Ben: and we ship it in may with a yellow case\n"
    "Anna: okay ben will call the factory on monday\n"
)

# One chunk for constrained enhancement: speaker labels, English and Vietnamese, a mark already there.
CONSTRAINED_CHUNK = (
    "Anna: so the budget for the new remote is twenty euros, right\n"
    "Minh: đúng vậy and we ship it in may with a yellow case"
)

# A template with short bounded fields: a random model fills strings up to their maxLength.
TINY_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "x-language": "en",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "decided": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["title", "decided", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module", name="templates_dir")
def templates_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("templates")
    bundle = root / "tiny_notes"
    bundle.mkdir()
    (bundle / "schema.json").write_text(json.dumps(TINY_SCHEMA, indent=2))
    (bundle / "example.json").write_text(json.dumps({"title": "Budget", "decided": True, "tags": ["x"]}))
    (bundle / "prompt.jinja").write_text(
        "Summarise the transcript as JSON matching this schema:\n{{ schema_json }}\n\n"
        "Transcript:\n{{ transcript }}\n"
    )
    return root


def engine_env(templates: Path, **extra: str) -> dict[str, str]:
    return base_env(
        HF_HUB_OFFLINE="1",
        TEMPLATES_DIR=str(templates),
        LLM_ENHANCE__MAX_MODEL_LEN="1024",
        LLM_SUM__MAX_MODEL_LEN="2048",
        LLM_ENHANCE__ENFORCE_EAGER="true",
        LLM_SUM__ENFORCE_EAGER="true",
        LLM_SUM__MAX_TOKENS="256",
        LLM_SERVER__REQUEST_TIMEOUT_SECONDS="120",
        **extra,
    )


def run_job(templates: Path, **kwargs: Any) -> JobResult:
    settings = load_settings(env_file=None, templates_dir=templates)
    return submit(TRANSCRIPT, template_id="tiny_notes", settings=settings, **kwargs).wait(timeout=300)
