"""One-line messages about bundles: shortened text, paths as shown, schema errors in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

__all__ = ["error_lines", "one_line", "display"]

_MAX_MESSAGE = 300


def error_lines(validator: Draft202012Validator, data: Any) -> list[str]:
    """Every way `data` fails `validator`, one line each with its JSON path, in path order."""
    errors = sorted(validator.iter_errors(data), key=_error_key)
    return [f"{error.json_path}: {one_line(error.message)}" for error in errors]


def _error_key(error: ValidationError) -> tuple[Any, ...]:
    # Paths mix list indexes and property names: order indexes numerically, before names.
    path = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part))
        for part in error.absolute_path
    )
    return (path, error.message)


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"


def display(path: Path) -> str:
    """A path as messages show it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)
