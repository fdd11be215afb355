"""`maie api`: checks the key and the address, then runs the API under uvicorn."""

from __future__ import annotations

import os

from maie.api.app import INSECURE_ENV
from maie.errors import ConfigError
from maie.loopback import is_loopback
from maie.settings import Settings

__all__ = ["check_serving", "run"]


def check_serving(settings: Settings, host: str, insecure: bool) -> bool:
    """Whether to serve without a key; ConfigError when the key or the address does not allow it."""
    has_key = bool(settings.secret_api_key and settings.secret_api_key.get_secret_value())
    if has_key:
        return False
    if not insecure:
        raise ConfigError(
            "SECRET_API_KEY is not set: the API does not start without a key "
            "(pass --insecure to serve without one, on 127.0.0.1 only)"
        )
    if not is_loopback(host):
        raise ConfigError(f"--insecure serves without a key, on 127.0.0.1 only: not on {host}")
    return True


def run(settings: Settings, host: str, port: int, workers: int, insecure: bool) -> None:
    import uvicorn

    without_key = check_serving(settings, host, insecure)
    if without_key:
        os.environ[INSECURE_ENV] = "1"  # read by create_app in each server process
    else:
        os.environ.pop(INSECURE_ENV, None)
    # An import string and a factory: each of `workers` processes builds its own app.
    uvicorn.run(
        "maie.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
