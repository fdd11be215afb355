"""Checking bundles: every problem of a bundle's prompt, schema and example, one line each.

A bundle is checked when it is loaded, so a broken one fails at the first job (or at
`maie templates check`) with one line naming the file, instead of producing bad prompts later.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable

from maie.errors import InputError
from maie.templates.bundle import (
    EXAMPLE_FILE,
    ID_RE,
    ID_RULE,
    PROMPT_FILE,
    PROMPT_VARIABLES,
    SCHEMA_FILE,
    bundle_dirs,
    is_bundle,
)
from maie.templates.messages import display, error_lines, one_line
from maie.templates.render import ENV, compile_prompt
from maie.templates.template import Template

__all__ = ["check_bundle", "check_dir", "inspect_bundle"]

_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

# Values used to render a prompt while checking it. Markup and non-ASCII characters make an
# escaping or encoding filter on `transcript` show up as "does not include the transcript".
_SAMPLE_TRANSCRIPT = (
    'Sample transcript <b>&amp;</b> "quoted": Chúng ta cần hoàn thành báo cáo trước thứ Sáu.'
)
_SAMPLE_SCHEMA_JSON = json.dumps({"type": "object", "x-sample": "unreadable schema"}, indent=2)


def check_bundle(path: Path) -> list[str]:
    """Every problem of the bundle at `path`, one line each naming its file; empty when valid."""
    return inspect_bundle(path, path.name)[1]


def check_dir(path: Path) -> dict[str, list[str]]:
    """Check a directory of bundles, or a single bundle, mapping bundle names to their problems."""
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    if is_bundle(path):
        return {path.resolve().name: check_bundle(path)}
    results: dict[str, list[str]] = {}
    for child in bundle_dirs(path):
        problems = check_bundle(child)
        if not ID_RE.fullmatch(child.name):
            problems.insert(0, f"{display(child)}: invalid template id: {ID_RULE}")
        results[child.name] = problems
    return results


def inspect_bundle(path: Path, template_id: str) -> tuple[Template | None, list[str]]:
    """Read and check a bundle: the template when it is valid, else every problem found."""
    if not path.is_dir():
        return None, [f"{display(path)}: not a directory"]
    problems: list[str] = []
    prompt_source = _read_text(path / PROMPT_FILE, problems)
    schema = _read_json(path / SCHEMA_FILE, problems)
    example = _read_json(path / EXAMPLE_FILE, problems)

    schema_ok = schema is not None and _check_schema(path / SCHEMA_FILE, schema, problems)
    if schema_ok and example is not None:
        for line in _example_problems(schema, example):
            problems.append(
                f"{display(path / EXAMPLE_FILE)}: does not match {SCHEMA_FILE}: {line}"
            )
    schema_json = json.dumps(schema, indent=2, ensure_ascii=False) if schema_ok else None
    if prompt_source is not None:
        problems.extend(_prompt_problems(path / PROMPT_FILE, prompt_source, schema_json))

    if problems:
        return None, problems
    assert isinstance(schema, dict) and isinstance(example, dict) and prompt_source is not None
    description = schema.get("description") or schema.get("title") or ""
    template = Template(
        id=template_id,
        language=schema.get("x-language", "en"),
        path=path,
        schema=schema,
        example=example,
        prompt_source=prompt_source,
        description=one_line(str(description)),
    )
    return template, []


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        # Bytes, not read_text(): newline translation would change prompt_sha256.
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        problems.append(f"{display(path)}: missing file")
    except IsADirectoryError:
        problems.append(f"{display(path)}: is a directory, not a file")
    except OSError as exc:
        problems.append(f"{display(path)}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        problems.append(f"{display(path)}: not UTF-8 text: {exc.reason} at byte {exc.start}")
    return None


def _read_json(path: Path, problems: list[str]) -> Any:
    text = _read_text(path, problems)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            f"{display(path)}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
        return None


def _check_schema(path: Path, schema: Any, problems: list[str]) -> bool:
    """Record the schema's problems; False when it cannot be used to check anything else."""
    where = display(path)
    if not isinstance(schema, dict):
        problems.append(f"{where}: not a JSON object")
        return False
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problems.append(
            f"{where}: not valid JSON Schema: at {exc.json_path}: {one_line(exc.message)}"
        )
        return False
    usable = True
    declared = schema.get("$schema")
    if declared is not None and declared.rstrip("#") != _DRAFT_2020_12:
        problems.append(
            f"{where}: declares $schema {declared!r}; only {_DRAFT_2020_12} is supported"
        )
        usable = False
    if schema.get("type") != "object":
        problems.append(f'{where}: the top level must have "type": "object"')
    language = schema.get("x-language", "en")
    if not isinstance(language, str) or not _LANGUAGE_RE.fullmatch(language):
        problems.append(f'{where}: "x-language" must be a language code such as "en" or "vi"')
    return usable


def _example_problems(schema: dict[str, Any], example: Any) -> list[str]:
    try:
        return error_lines(Draft202012Validator(schema), example)
    except Unresolvable as exc:
        return [f"unresolvable reference: {exc}"]


def _prompt_problems(path: Path, source: str, schema_json: str | None) -> list[str]:
    where = display(path)
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [f"{where}: line {exc.lineno}: Jinja syntax error: {one_line(exc.message or '')}"]
    # Static check first: it also finds variables used only in branches the sample render skips.
    unknown = meta.find_undeclared_variables(ast) - PROMPT_VARIABLES - set(ENV.globals)
    if unknown:
        names = ", ".join(sorted(unknown))
        return [
            f"{where}: uses undefined variable(s) {names}; a prompt receives only "
            "transcript and schema_json"
        ]
    sample_schema = schema_json if schema_json is not None else _SAMPLE_SCHEMA_JSON
    try:
        rendered = compile_prompt(source).render(
            transcript=_SAMPLE_TRANSCRIPT, schema_json=sample_schema
        )
    except jinja2.UndefinedError as exc:
        return [f"{where}: uses an undefined value: {one_line(exc.message or '')}"]
    except Exception as exc:  # any failure of a user's prompt is a finding
        return [f"{where}: rendering failed: {type(exc).__name__}: {one_line(str(exc))}"]
    problems = []
    if sample_schema not in rendered:
        problems.append(
            f"{where}: does not include the schema: insert {{{{ schema_json }}}} unfiltered"
        )
    if _SAMPLE_TRANSCRIPT not in rendered:
        problems.append(
            f"{where}: does not include the transcript: insert {{{{ transcript }}}} unfiltered"
        )
    return problems
