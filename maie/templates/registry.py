"""Finding bundles by id: the user's directory before the built-ins, loaded once per change."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from maie.errors import ConfigError, InputError
from maie.templates.bundle import (
    BUNDLE_FILES,
    ID_RE,
    ID_RULE,
    builtin_templates_dir,
    bundle_dirs,
    is_bundle,
)
from maie.templates.check import inspect_bundle
from maie.templates.messages import display
from maie.templates.template import Template

__all__ = ["template_dirs", "load_template", "list_templates"]


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
        if is_bundle(candidate):
            return _load_bundle(candidate, template_id)
    available = ", ".join(_available_ids(dirs)) or "(none)"
    raise InputError(f"unknown template '{template_id}'; available: {available}")


def list_templates(extra_dir: Path | None = None) -> list[Template]:
    """Every available template sorted by id; a broken bundle raises its ConfigError."""
    found: dict[str, Path] = {}
    for directory in template_dirs(extra_dir):
        for child in bundle_dirs(directory):
            if child.name in found:
                continue  # overridden by a bundle of an earlier directory
            if not ID_RE.fullmatch(child.name):
                raise ConfigError(f"{display(child)}: invalid template id: {ID_RULE}")
            found[child.name] = child
    return [_load_bundle(path, template_id) for template_id, path in sorted(found.items())]


def _check_id(template_id: object) -> None:
    if not isinstance(template_id, str) or not ID_RE.fullmatch(template_id):
        shown = template_id[:80] if isinstance(template_id, str) else template_id
        raise InputError(f"invalid template id {shown!r}: {ID_RULE}")


def _available_ids(dirs: list[Path]) -> list[str]:
    ids = {child.name for d in dirs for child in bundle_dirs(d) if ID_RE.fullmatch(child.name)}
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
    template, problems = inspect_bundle(path, template_id)
    if template is None:
        raise ConfigError("; ".join(problems))
    return template
