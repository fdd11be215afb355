"""Error answers: one shape everywhere, one line of text, never a traceback.

    {"detail": "<one line>", "error": {"code": "<code>", "message": "<one line>"}}

`detail` is what the previous MAIE's server answered; `error` is what its documentation described.
"""

from __future__ import annotations

import json
import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import Send

from maie.errors import BackendUnavailable, ConfigError, InputError, MaieError, QueueFull

__all__ = [
    "RETRY_AFTER_SECONDS",
    "error_body",
    "error_response",
    "install_error_handlers",
    "maie_error_response",
    "send_error",
]

log = logging.getLogger("maie.api")

# How long a client should wait after a full queue or an unreachable Redis before trying again.
RETRY_AFTER_SECONDS = 5


def one_line(text: str, limit: int = 1000) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_body(code: str, message: str) -> dict[str, object]:
    line = one_line(message)
    return {"detail": line, "error": {"code": code, "message": line}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def maie_error_response(exc: MaieError) -> JSONResponse:
    """The status for each of MAIE's errors: the client's fault (400), wait (429/503), ours (500)."""
    if isinstance(exc, InputError):
        return error_response(400, exc.code, str(exc))
    if isinstance(exc, QueueFull):
        return error_response(429, exc.code, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, BackendUnavailable):
        return error_response(503, exc.code, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, ConfigError):
        return error_response(500, exc.code, f"server configuration: {exc}")
    return error_response(500, exc.code, str(exc))


def install_error_handlers(api: FastAPI) -> None:
    """Answer every failure of a route in the one error shape."""

    @api.exception_handler(MaieError)
    async def on_maie_error(request: Request, exc: MaieError) -> JSONResponse:
        return maie_error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return error_response(422, "validation_error", problems or "invalid request")

    @api.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @api.exception_handler(redis.RedisError)
    async def on_redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
        return maie_error_response(BackendUnavailable(f"cannot reach Redis: {exc}"))

    @api.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log; the client gets one line.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; the server log has the details")


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    """An error answer from ASGI middleware, before any route ran."""
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
