"""`maie config`: show and check the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maie.backends.kinds import kind_of
from maie.cli.console import err, fail, out, settings
from maie.errors import ConfigError, InputError
from maie.names import TASKS
from maie.settings import Settings, find_legacy_names, legacy_message, load_settings, mask_url

config_app = typer.Typer(help="Show and check the configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(
    env_file: Annotated[Path, typer.Option(help="The .env file to read.")] = Path(".env"),
) -> None:
    """Show the resolved backend, endpoint and model per task (API keys masked)."""
    legacy = find_legacy_names(env_file=env_file)
    try:
        s = load_settings(env_file=env_file) if not legacy else _settings_without_legacy(env_file)
    except ConfigError as exc:
        fail(exc)
    out.print(f"LLM_BACKEND={s.llm_backend}", markup=False)
    kind = kind_of(s)
    for task in TASKS:
        out.print(f"{task}: {kind.describe(task, s).line}", markup=False)
    out.print(
        f"broker={mask_url(s.celery_broker_url)} result_backend={mask_url(s.celery_result_backend)}",
        markup=False,
    )
    if legacy:
        fail(ConfigError(legacy_message(legacy)))


def _settings_without_legacy(env_file: Path) -> Settings:
    # Show what the rest of the configuration resolves to, then flag the legacy names: the removed
    # LLM_SERVER__* names are ignored here rather than refused as unknown fields (whose error would
    # echo their values, keys included).
    from pydantic import ConfigDict, Field

    from maie.settings import LlmServerSettings

    class _LegacyTolerantServer(LlmServerSettings):
        model_config = ConfigDict(extra="ignore")

    class _LegacyTolerantSettings(Settings):
        llm_server: _LegacyTolerantServer = Field(default_factory=_LegacyTolerantServer)

    return _LegacyTolerantSettings(_env_file=env_file)  # type: ignore[call-arg]


@config_app.command("vllm-args")
def config_vllm_args(
    task: Annotated[str, typer.Argument(help="enhance or summary.")],
    port: Annotated[
        int | None, typer.Option(help="Server port (default 8001 for enhance, 8002 for summary).")
    ] = None,
) -> None:
    """Print the vLLM server arguments for TASK, one per line (the API key goes in VLLM_API_KEY)."""
    from maie.serve import DEFAULT_PORTS, vllm_server_args

    if task not in TASKS:
        fail(InputError(f"unknown task {task!r}: use enhance or summary"))
    for arg in vllm_server_args(settings(), task, port or DEFAULT_PORTS[task]):
        typer.echo(arg)


@config_app.command("check")
def config_check() -> None:
    """Reach each task's LLM: for a server, list its models and time a one-token completion."""
    s = settings()
    kind = kind_of(s)
    failed = False
    for task in TASKS:
        health = kind.health(task, s)
        if health.ok:
            out.print(f"{task}: {health.message}", markup=False)
            continue
        failed = True
        err.print(f"{task}: {health.message}", markup=False)
        if health.hint:
            err.print(f"  hint: {health.hint}", markup=False)
    if failed:
        raise typer.Exit(1)
