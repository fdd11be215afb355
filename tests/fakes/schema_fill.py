"""JSON-schema replies: one deterministic instance of a schema, and a check of it.

Every property is filled; strings are the property name plus the first 6 words of the last
non-empty line of the last user message, enums take their first value, nullable unions take the
non-null branch, arrays get ``max(1, minItems)`` items, numbers are 0 (or the minimum), booleans
false; ``$ref``/``$defs``, ``allOf``/``anyOf``/``oneOf``, ``const`` and ``minLength``/``maxLength``
are honoured. ``jsonschema``, when installed, self-checks the result.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any

from .text import snippet

try:
    import jsonschema
except ImportError:  # pragma: no cover - the server itself needs only the standard library
    jsonschema = None  # type: ignore[assignment]


class _SchemaFiller:
    """Builds one deterministic instance of a JSON schema (the subset LLM tooling emits)."""

    def __init__(self, root: Mapping[str, Any], snippet: str) -> None:
        self.root = root
        self.snippet = snippet

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node: Any = self.root
        for part in ref.lstrip("#").split("/"):
            if part:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            if isinstance(sub, Mapping) and "$ref" in sub:
                sub = self._resolve(sub["$ref"])
            if not isinstance(sub, Mapping):
                continue
            for key, value in sub.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def value(self, schema: Any, name: str, index: int = 0, depth: int = 0) -> Any:
        if depth > 40 or schema is False:
            return None
        if not isinstance(schema, Mapping):
            return self._string({}, name, index)
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, Mapping) else rest
        if "allOf" in schema:
            schema = self._merge_all_of(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options:
                chosen = next((o for o in options if not _is_null_schema(o)), options[0])
                rest = {k: v for k, v in schema.items() if k != key}
                merged = {**rest, **chosen} if isinstance(chosen, Mapping) else chosen
                return self.value(merged, name, index, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer", index)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self._string(schema, name, index)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        out = {key: self.value(sub, key, 0, depth + 1) for key, sub in props.items()}
        for key in schema.get("required") or ():
            if key not in out:
                out[key] = self._string({}, key, 0)
        return out

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        count = max(1, int(schema.get("minItems", 0)), len(prefix))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self.value(sub, name, i, depth + 1))
        return out

    def _string(self, schema: Mapping[str, Any], name: str, index: int) -> str:
        fmt = schema.get("format")
        fixed = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00Z",
            "email": "fake@example.com",
            "uri": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000",
        }
        if fmt in fixed:
            return fixed[fmt]
        text = f"{name} {self.snippet}".strip() or "text"
        if index:
            text += f" {index + 1}"  # keeps items distinct for uniqueItems
        min_len = int(schema.get("minLength", 0))
        if len(text) < min_len:
            text = text.ljust(min_len, "x")
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _number(schema: Mapping[str, Any], integer: bool, index: int) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    step = 1 if integer else 0.5
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = schema["exclusiveMinimum"] + step
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = schema["exclusiveMaximum"] - step
    value: float = index
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return int(math.ceil(value)) if integer else float(value)


def instance_for_schema(schema: Mapping[str, Any], text: str = "") -> Any:
    """A deterministic instance of `schema`, its strings seeded from the last line of `text`."""
    return _SchemaFiller(schema, snippet(text)).value(schema, "value")


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A compiled validator, cached because load runs send the same schema again and again."""
    if jsonschema is None:
        return None
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_error(schema: Mapping[str, Any], instance: Any) -> str | None:
    """The first reason `instance` does not validate, or None (also None without jsonschema)."""
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except Exception as exc:  # an invalid schema is reported, not raised
        return f"invalid schema: {exc}"
    if validator is None:
        return None
    error = next(iter(validator.iter_errors(instance)), None)
    return None if error is None else f"{error.json_path}: {error.message}"


def violating_instance(schema: Mapping[str, Any]) -> Any:
    """Valid JSON that the schema rejects: `{}` when fields are required, else a wrong type."""
    candidates: tuple[Any, ...] = ({}, [], "invalid", 0)
    for candidate in candidates:
        if schema_error(schema, candidate) is not None:
            return candidate
    return {}
