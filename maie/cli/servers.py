"""The serving commands: the HTTP API and the Prometheus metrics endpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from maie.cli.console import fail, settings
from maie.errors import ConfigError


def api(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    insecure: Annotated[bool, typer.Option(help="Serve without SECRET_API_KEY (on 127.0.0.1 only).")] = False,
) -> None:
    """Serve the HTTP API (the previous MAIE's routes; see docs/API.md)."""
    from maie.api.server import run

    s = settings()
    try:
        run(s, host, port, workers, insecure)
    except ConfigError as exc:
        fail(exc)


def metrics(
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9808,
) -> None:
    """Serve MAIE's Prometheus metrics: queue depths, LLM tokens and time per endpoint, chunks, jobs."""
    from maie.metrics import serve

    s = settings()
    try:
        serve(s, port, address)
    except OSError as exc:
        fail(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}", 2)
