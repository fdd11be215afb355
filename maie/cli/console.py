"""Where the commands write, and how they fail: one line on stderr and an exit code."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from maie.errors import ConfigError, InputError
from maie.settings import Settings, load_settings

out = Console(soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: Exception | str, code: int | None = None) -> NoReturn:
    message = " ".join(str(exc).split())
    err.print(f"maie: error: {message}", markup=False)
    if code is None:
        code = 2 if isinstance(exc, InputError | ConfigError) else 1
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(exc)
