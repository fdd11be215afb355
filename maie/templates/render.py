"""Rendering prompts: the sandboxed Jinja environment and the partial-notes prompt."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from maie.errors import ConfigError
from maie.templates.bundle import PARTIAL_NOTES_FILE, builtin_templates_dir
from maie.templates.messages import display, one_line

__all__ = ["ENV", "compile_prompt", "render_partial_notes"]

# Prompts come from users' directories, so they run sandboxed; StrictUndefined turns a misspelt
# variable into an error instead of an empty string in the prompt.
ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=64)
def compile_prompt(source: str) -> jinja2.Template:
    return ENV.from_string(source)


def render_partial_notes(transcript: str, language: str) -> str:
    """The prompt asking for notes on one part of a long transcript, in `language` (en, vi)."""
    path = builtin_templates_dir() / PARTIAL_NOTES_FILE
    try:
        source = _read_partial_notes(path, path.stat().st_mtime_ns)
        return compile_prompt(source).render(transcript=transcript, language=language)
    except OSError as exc:
        raise ConfigError(f"{display(path)}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{display(path)}: not UTF-8 text: {exc.reason}") from exc
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{display(path)}: {one_line(str(exc))}") from exc


@lru_cache(maxsize=4)
def _read_partial_notes(path: Path, mtime_ns: int) -> str:
    # `mtime_ns` is only part of the cache key: an edited file is read again.
    return path.read_bytes().decode("utf-8")
