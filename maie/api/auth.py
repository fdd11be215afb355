"""API keys: `X-API-Key` checked against `SECRET_API_KEY` before a protected request's body is read.

The check runs as ASGI middleware, not as a route dependency: a dependency runs after the body has
been parsed, so an unauthenticated client could make the server read a whole upload first.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from maie.api.errors import send_error

__all__ = ["API_KEY_HEADER", "ApiKeyMiddleware", "is_protected", "key_matches"]

API_KEY_HEADER = "X-API-Key"
_HEADER = API_KEY_HEADER.lower().encode("latin-1")
# Open to anyone, as in the previous MAIE: probes, the API's own documentation, the templates.
_PUBLIC_PREFIXES = ("/v1/templates",)


def is_protected(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(_PUBLIC_PREFIXES)


def key_matches(given: bytes, expected: bytes) -> bool:
    """Constant-time comparison: the time taken says nothing about how much of the key matched.
    Digests of equal length are compared, so it says nothing about the key's length either."""
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


class ApiKeyMiddleware:
    """401 without a key, 403 with a wrong one; `expected` None serves without keys (--insecure)."""

    def __init__(self, app: ASGIApp, expected: bytes | None) -> None:
        self.app = app
        self.expected = expected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.expected is None or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        if given is None or not given:
            await send_error(send, 401, "unauthorized", f"{API_KEY_HEADER} header required")
            return
        if not key_matches(given, self.expected):
            await send_error(send, 403, "forbidden", "invalid API key")
            return
        await self.app(scope, receive, send)
