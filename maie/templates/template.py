"""`Template`: one loaded and checked bundle, which renders prompts and validates summaries."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from maie.errors import ConfigError
from maie.templates.bundle import PROMPT_FILE, SCHEMA_FILE
from maie.templates.messages import display, error_lines, one_line
from maie.templates.render import compile_prompt

__all__ = ["Template"]


@dataclass(frozen=True)
class Template:
    """One loaded and checked template bundle.

    Loaded templates are cached and shared between jobs: treat `schema` and `example` as read-only.
    """

    id: str
    language: str
    path: Path
    schema: dict[str, Any]
    example: dict[str, Any]
    prompt_source: str
    description: str = ""

    @cached_property
    def schema_json(self) -> str:
        """The schema as the prompt shows it: pretty-printed, non-ASCII kept readable."""
        return json.dumps(self.schema, indent=2, ensure_ascii=False)

    @cached_property
    def prompt_sha256(self) -> str:
        """Hex SHA-256 of prompt.jinja's bytes (recorded with results for reproducibility)."""
        return hashlib.sha256(self.prompt_source.encode("utf-8")).hexdigest()

    @cached_property
    def schema_sha256(self) -> str:
        """Hex SHA-256 of the schema's canonical JSON, independent of its file's formatting."""
        canonical = json.dumps(
            self.schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def required_fields(self) -> list[str]:
        """The schema's top-level `required` properties."""
        return [str(name) for name in self.schema.get("required", [])]

    @cached_property
    def _validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)

    def render(self, transcript: str) -> str:
        """The summary prompt for one transcript."""
        try:
            return compile_prompt(self.prompt_source).render(
                transcript=transcript, schema_json=self.schema_json
            )
        except jinja2.TemplateError as exc:
            where = display(self.path / PROMPT_FILE)
            raise ConfigError(f"{where}: rendering failed: {one_line(str(exc))}") from exc

    def validate(self, data: Any) -> list[str]:
        """Why `data` does not match the schema, one line per error with its JSON path."""
        try:
            return error_lines(self._validator, data)
        except Unresolvable as exc:
            where = display(self.path / SCHEMA_FILE)
            raise ConfigError(f"{where}: unresolvable reference: {exc}") from exc
