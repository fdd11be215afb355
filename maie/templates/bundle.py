"""What a bundle is: its files, the ids it may have, and where bundles are found on disk."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "PROMPT_FILE",
    "SCHEMA_FILE",
    "EXAMPLE_FILE",
    "BUNDLE_FILES",
    "PARTIAL_NOTES_FILE",
    "PROMPT_VARIABLES",
    "ID_RE",
    "ID_RULE",
    "builtin_templates_dir",
    "is_bundle",
    "bundle_dirs",
]

PROMPT_FILE = "prompt.jinja"
SCHEMA_FILE = "schema.json"
EXAMPLE_FILE = "example.json"
BUNDLE_FILES = (PROMPT_FILE, SCHEMA_FILE, EXAMPLE_FILE)
PARTIAL_NOTES_FILE = "partial_notes.jinja"
PROMPT_VARIABLES = frozenset({"transcript", "schema_json"})

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ID_RULE = "use 1 to 64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit"


def builtin_templates_dir() -> Path:
    """The bundles shipped with the package (`maie/builtin_templates/`)."""
    return Path(__file__).resolve().parent.parent / "builtin_templates"


def is_bundle(path: Path) -> bool:
    return path.is_dir() and ((path / SCHEMA_FILE).exists() or (path / PROMPT_FILE).exists())


def bundle_dirs(directory: Path) -> list[Path]:
    """The bundles directly inside `directory`, sorted; names starting with `_` or `.` are not."""
    return [
        child
        for child in sorted(directory.iterdir())
        if not child.name.startswith(("_", ".")) and is_bundle(child)
    ]
