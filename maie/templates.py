"""Summary templates: bundles of a prompt, a JSON Schema and an example summary.

A bundle is a directory `<templates dir>/<id>/` holding:

    prompt.jinja   the summary prompt; it receives exactly `transcript` and `schema_json`
    schema.json    a draft 2020-12 JSON Schema of the summary, a top-level object; the optional
                   top-level keyword `x-language` ("en", "vi") names the language of the summary
    example.json   a realistic summary that validates against the schema
    README.md      optional notes for people

The built-in bundles ship inside the package, in `maie/builtin_templates/` (package data, so a
plain `pip install` has them). A user directory (`TEMPLATES_DIR`) is searched first, so its
bundles override built-ins with the same id and add new ones. Directories whose names start with
`_` or `.` are never bundles.

Every bundle is checked when it is loaded, so a broken one fails at the first job (or at
`maie templates check`) with one line naming the file, instead of producing bad prompts later.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from referencing.exceptions import Unresolvable

from maie.errors import ConfigError, InputError

__all__ = [
    "Template",
    "PROMPT_FILE",
    "SCHEMA_FILE",
    "EXAMPLE_FILE",
    "BUNDLE_FILES",
    "PARTIAL_NOTES_FILE",
    "builtin_templates_dir",
    "template_dirs",
    "load_template",
    "list_templates",
    "check_bundle",
    "check_dir",
    "render_partial_notes",
]

PROMPT_FILE = "prompt.jinja"
SCHEMA_FILE = "schema.json"
EXAMPLE_FILE = "example.json"
BUNDLE_FILES = (PROMPT_FILE, SCHEMA_FILE, EXAMPLE_FILE)
PARTIAL_NOTES_FILE = "partial_notes.jinja"
PROMPT_VARIABLES = frozenset({"transcript", "schema_json"})

_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ID_RULE = "use 1 to 64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit"
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_MAX_MESSAGE = 300

# Values used to render a prompt while checking it. Markup and non-ASCII characters make an
# escaping or encoding filter on `transcript` show up as "does not include the transcript".
_SAMPLE_TRANSCRIPT = (
    'Sample transcript <b>&amp;</b> "quoted": Chúng ta cần hoàn thành báo cáo trước thứ Sáu.'
)
_SAMPLE_SCHEMA_JSON = json.dumps({"type": "object", "x-sample": "unreadable schema"}, indent=2)

# Prompts come from users' directories, so they run sandboxed; StrictUndefined turns a misspelt
# variable into an error instead of an empty string in the prompt.
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


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
            return _compile(self.prompt_source).render(
                transcript=transcript, schema_json=self.schema_json
            )
        except jinja2.TemplateError as exc:
            where = _display(self.path / PROMPT_FILE)
            raise ConfigError(f"{where}: rendering failed: {_one_line(str(exc))}") from exc

    def validate(self, data: Any) -> list[str]:
        """Why `data` does not match the schema, one line per error with its JSON path."""
        try:
            return _error_lines(self._validator, data)
        except Unresolvable as exc:
            where = _display(self.path / SCHEMA_FILE)
            raise ConfigError(f"{where}: unresolvable reference: {exc}") from exc


def builtin_templates_dir() -> Path:
    """The bundles shipped with the package (`maie/builtin_templates/`)."""
    return Path(__file__).resolve().parent / "builtin_templates"


def template_dirs(extra: Path | None = None) -> list[Path]:
    """Where bundles are looked up, in order: the user's directory first, then the built-ins."""
    dirs: list[Path] = []
    if extra is not None:
        extra = Path(extra).expanduser()
        # A mistyped TEMPLATES_DIR must not fall back silently to the built-in templates.
        if not extra.is_dir():
            raise ConfigError(f"templates directory {extra}: not a directory")
        dirs.append(extra)
    builtin = builtin_templates_dir()
    if builtin.is_dir() and all(d.resolve() != builtin for d in dirs):
        dirs.append(builtin)
    return dirs


def load_template(template_id: str, extra_dir: Path | None = None) -> Template:
    """Load and check the bundle `template_id`, the user's directory taking precedence.

    Raises InputError for an invalid or unknown id and ConfigError for a broken bundle.
    """
    _check_id(template_id)
    dirs = template_dirs(extra_dir)
    for directory in dirs:
        candidate = directory / template_id
        if _is_bundle(candidate):
            return _load_bundle(candidate, template_id)
    available = ", ".join(_available_ids(dirs)) or "(none)"
    raise InputError(f"unknown template '{template_id}'; available: {available}")


def list_templates(extra_dir: Path | None = None) -> list[Template]:
    """Every available template sorted by id; a broken bundle raises its ConfigError."""
    found: dict[str, Path] = {}
    for directory in template_dirs(extra_dir):
        for child in _bundle_dirs(directory):
            if child.name in found:
                continue  # overridden by a bundle of an earlier directory
            if not _ID_RE.fullmatch(child.name):
                raise ConfigError(f"{_display(child)}: invalid template id: {_ID_RULE}")
            found[child.name] = child
    return [_load_bundle(path, template_id) for template_id, path in sorted(found.items())]


def check_bundle(path: Path) -> list[str]:
    """Every problem of the bundle at `path`, one line each naming its file; empty when valid."""
    return _inspect(path, path.name)[1]


def check_dir(path: Path) -> dict[str, list[str]]:
    """Check a directory of bundles, or a single bundle, mapping bundle names to their problems."""
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    if _is_bundle(path):
        return {path.resolve().name: check_bundle(path)}
    results: dict[str, list[str]] = {}
    for child in _bundle_dirs(path):
        problems = check_bundle(child)
        if not _ID_RE.fullmatch(child.name):
            problems.insert(0, f"{_display(child)}: invalid template id: {_ID_RULE}")
        results[child.name] = problems
    return results


def render_partial_notes(transcript: str, language: str) -> str:
    """The prompt asking for notes on one part of a long transcript, in `language` (en, vi)."""
    path = builtin_templates_dir() / PARTIAL_NOTES_FILE
    try:
        source = _read_partial_notes(path, path.stat().st_mtime_ns)
        return _compile(source).render(transcript=transcript, language=language)
    except OSError as exc:
        raise ConfigError(f"{_display(path)}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{_display(path)}: not UTF-8 text: {exc.reason}") from exc
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{_display(path)}: {_one_line(str(exc))}") from exc


# --- loading -------------------------------------------------------------------------------------


def _check_id(template_id: object) -> None:
    if not isinstance(template_id, str) or not _ID_RE.fullmatch(template_id):
        shown = template_id[:80] if isinstance(template_id, str) else template_id
        raise InputError(f"invalid template id {shown!r}: {_ID_RULE}")


def _is_bundle(path: Path) -> bool:
    return path.is_dir() and ((path / SCHEMA_FILE).exists() or (path / PROMPT_FILE).exists())


def _bundle_dirs(directory: Path) -> list[Path]:
    return [
        child
        for child in sorted(directory.iterdir())
        if not child.name.startswith(("_", ".")) and _is_bundle(child)
    ]


def _available_ids(dirs: list[Path]) -> list[str]:
    ids = {child.name for d in dirs for child in _bundle_dirs(d) if _ID_RE.fullmatch(child.name)}
    return sorted(ids)


def _load_bundle(path: Path, template_id: str) -> Template:
    return _load_cached(path.resolve(), template_id, _stamp(path))


def _stamp(path: Path) -> tuple[tuple[int, int] | None, ...]:
    """(mtime, size) of each bundle file: a change to any of them invalidates the cache entry."""
    stamps: list[tuple[int, int] | None] = []
    for name in BUNDLE_FILES:
        try:
            st = (path / name).stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_size))
    return tuple(stamps)


@lru_cache(maxsize=128)
def _load_cached(
    path: Path, template_id: str, stamp: tuple[tuple[int, int] | None, ...]
) -> Template:
    # `stamp` is only part of the cache key.
    template, problems = _inspect(path, template_id)
    if template is None:
        raise ConfigError("; ".join(problems))
    return template


@lru_cache(maxsize=4)
def _read_partial_notes(path: Path, mtime_ns: int) -> str:
    return path.read_bytes().decode("utf-8")


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


# --- checking ------------------------------------------------------------------------------------


def _inspect(path: Path, template_id: str) -> tuple[Template | None, list[str]]:
    """Read and check a bundle: the template when it is valid, else every problem found."""
    if not path.is_dir():
        return None, [f"{_display(path)}: not a directory"]
    problems: list[str] = []
    prompt_source = _read_text(path / PROMPT_FILE, problems)
    schema = _read_json(path / SCHEMA_FILE, problems)
    example = _read_json(path / EXAMPLE_FILE, problems)

    schema_ok = schema is not None and _check_schema(path / SCHEMA_FILE, schema, problems)
    if schema_ok and example is not None:
        for line in _example_problems(schema, example):
            problems.append(
                f"{_display(path / EXAMPLE_FILE)}: does not match {SCHEMA_FILE}: {line}"
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
        description=_one_line(str(description)),
    )
    return template, []


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        # Bytes, not read_text(): newline translation would change prompt_sha256.
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        problems.append(f"{_display(path)}: missing file")
    except IsADirectoryError:
        problems.append(f"{_display(path)}: is a directory, not a file")
    except OSError as exc:
        problems.append(f"{_display(path)}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        problems.append(f"{_display(path)}: not UTF-8 text: {exc.reason} at byte {exc.start}")
    return None


def _read_json(path: Path, problems: list[str]) -> Any:
    text = _read_text(path, problems)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            f"{_display(path)}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
        return None


def _check_schema(path: Path, schema: Any, problems: list[str]) -> bool:
    """Record the schema's problems; False when it cannot be used to check anything else."""
    where = _display(path)
    if not isinstance(schema, dict):
        problems.append(f"{where}: not a JSON object")
        return False
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problems.append(
            f"{where}: not valid JSON Schema: at {exc.json_path}: {_one_line(exc.message)}"
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
        return _error_lines(Draft202012Validator(schema), example)
    except Unresolvable as exc:
        return [f"unresolvable reference: {exc}"]


def _prompt_problems(path: Path, source: str, schema_json: str | None) -> list[str]:
    where = _display(path)
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [f"{where}: line {exc.lineno}: Jinja syntax error: {_one_line(exc.message or '')}"]
    # Static check first: it also finds variables used only in branches the sample render skips.
    unknown = meta.find_undeclared_variables(ast) - PROMPT_VARIABLES - set(_ENV.globals)
    if unknown:
        names = ", ".join(sorted(unknown))
        return [
            f"{where}: uses undefined variable(s) {names}; a prompt receives only "
            "transcript and schema_json"
        ]
    sample_schema = schema_json if schema_json is not None else _SAMPLE_SCHEMA_JSON
    try:
        rendered = _compile(source).render(transcript=_SAMPLE_TRANSCRIPT, schema_json=sample_schema)
    except jinja2.UndefinedError as exc:
        return [f"{where}: uses an undefined value: {_one_line(exc.message or '')}"]
    except Exception as exc:  # any failure of a user's prompt is a finding
        return [f"{where}: rendering failed: {type(exc).__name__}: {_one_line(str(exc))}"]
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


# --- messages ------------------------------------------------------------------------------------


def _error_lines(validator: Draft202012Validator, data: Any) -> list[str]:
    errors = sorted(validator.iter_errors(data), key=_error_key)
    return [f"{error.json_path}: {_one_line(error.message)}" for error in errors]


def _error_key(error: ValidationError) -> tuple[Any, ...]:
    # Paths mix list indexes and property names: order indexes numerically, before names.
    path = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part))
        for part in error.absolute_path
    )
    return (path, error.message)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"


def _display(path: Path) -> str:
    """A path as messages show it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)
