"""Whisper-style JSON: `{"segments": [...]}`, a bare list of segments, or `{"text": "..."}`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from maie.inputs.prose import clean, speaker_name
from maie.inputs.segments import Segment
from maie.inputs.validate import check_times, fail

__all__ = ["parse_json"]


def parse_json(text: str, where: str) -> list[Segment]:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise fail(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise fail(f"{where} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        if "segments" in data:
            items = data["segments"]
            if not isinstance(items, list):
                raise fail(f"{where}: 'segments' must be a list, got {_json_type(items)}")
            if items or not isinstance(data.get("text"), str):
                return _json_segments(items, where)
        body = data.get("text")
        if isinstance(body, str):
            if not body.strip():
                raise fail(f"{where}: 'text' is empty")
            # Imported here: maie.inputs.detect imports this module to dispatch to it.
            from maie.inputs.detect import parse_as

            return parse_as(body, "prose", f"{where} 'text'")
        if "text" in data:
            raise fail(f"{where}: 'text' must be a string, got {_json_type(body)}")
        raise fail(f"{where}: JSON object has neither a 'segments' list nor a 'text' string")
    if isinstance(data, list):
        return _json_segments(data, where)
    raise fail(f"{where}: JSON must be an object or a list of segments, got {_json_type(data)}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, int | float) else type(value).__name__


def _json_segments(items: Sequence[object], where: str) -> list[Segment]:
    if not items:
        raise fail(f"{where}: no segments")
    segments = []
    for index, item in enumerate(items):
        at = f"{where}: segments[{index}]"
        if not isinstance(item, dict):
            raise fail(f"{at} must be an object, got {_json_type(item)}")
        body = item.get("text")
        if not isinstance(body, str):
            problem = "has no 'text'" if "text" not in item else f"'text' is {_json_type(body)}"
            raise fail(f"{at} {problem}; expected a string")
        speaker = item.get("speaker")
        if speaker is not None and not isinstance(speaker, str):
            raise fail(f"{at} 'speaker' must be a string, got {_json_type(speaker)}")
        start = _json_time(item, "start", at)
        end = _json_time(item, "end", at)
        check_times(start, end, at)
        segments.append(Segment(clean(body), speaker_name(speaker), start, end))
    return segments


def _json_time(item: dict[str, Any], key: str, at: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{at} '{key}' must be a number of seconds, got {_json_type(value)}")
    if not math.isfinite(value):
        raise fail(f"{at} '{key}' is not a finite number")
    return float(value)
