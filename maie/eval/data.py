"""Evaluation data: JSON Lines files of items, and the items a run is asked for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maie.errors import InputError


def load_jsonl(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """Read a JSONL file whose lines are objects holding non-empty strings under `required`.

    Raises InputError (one line) for a missing, unreadable, empty or malformed file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: not valid JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise InputError(f"{path} line {number}: expected a JSON object, got {type(item).__name__}")
        for name in required:
            value = item.get(name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{path} line {number}: missing or empty string field '{name}'")
        item.setdefault("id", f"line-{number}")
        item["id"] = str(item["id"])
        items.append(item)
    if not items:
        raise InputError(f"{path}: no items")
    return items


def select_items(
    items: list[dict[str, Any]], ids: Sequence[str] | None, limit: int | None
) -> list[dict[str, Any]]:
    """The items whose id is in `ids` (every item without), then the first `limit` of them."""
    if ids:
        known = {str(item["id"]) for item in items}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InputError(f"no item with id {', '.join(map(repr, unknown))}")
        items = [item for item in items if item["id"] in ids]
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        items = items[:limit]
    return items
