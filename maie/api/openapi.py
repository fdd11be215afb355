"""What the OpenAPI document says beside each route: the error answers, the key, an example."""

from __future__ import annotations

from typing import Any

from fastapi import Security
from fastapi.security import APIKeyHeader

from maie.api.auth import API_KEY_HEADER
from maie.api.models import ErrorResponse

__all__ = ["CURL", "api_key", "errors"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Bad input (the CLI's one-line message); nothing was queued.",
        401: "X-API-Key header missing.",
        403: "X-API-Key does not match SECRET_API_KEY.",
        413: "Request body over API_MAX_UPLOAD_BYTES.",
        422: "Request malformed (a required field missing, a field of the wrong type).",
        429: "A queue is over QUEUE_MAX_DEPTH; retry after Retry-After seconds. Nothing was queued.",
        503: "Redis unreachable; retry after Retry-After seconds.",
    }.items()
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers for these status codes."""
    return {c: _ERRORS[c] for c in codes}


# Declared for the OpenAPI document (and /docs' Authorize button); ApiKeyMiddleware enforces it.
api_key = Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))

CURL = """
```bash
curl -X POST "http://localhost:8000/v1/process" \\
  -H "X-API-Key: $SECRET_API_KEY" \\
  -F "file=@meeting.srt" \\
  -F "features=clean_transcript" \\
  -F "features=summary" \\
  -F "template_id=meeting_notes"
```
"""
