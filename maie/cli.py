"""The `maie` command line: submit, follow and inspect jobs, templates and configuration.

Errors print one line on stderr. Exit codes: 0 ok; 1 the job or a check failed, or a service it
needs (Redis, the broker) could not be reached: trying again later can help; 2 the input or the
configuration was refused (nothing was queued).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from maie.errors import ConfigError, InputError, MaieError
from maie.names import TASKS
from maie.result import JobResult
from maie.settings import Settings, find_legacy_names, legacy_message, load_settings, mask_url

if TYPE_CHECKING:
    from maie.submit import Job

app = typer.Typer(
    help="MAIE: speech transcripts to clean text and structured summaries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
templates_app = typer.Typer(help="List, show and check summary templates.", no_args_is_help=False)
config_app = typer.Typer(help="Show and check the configuration.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")
app.add_typer(config_app, name="config")
from maie.evaluate import eval_app  # noqa: E402  (matplotlib is imported only when a report is drawn)

app.add_typer(eval_app, name="eval")

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


# -- jobs ----------------------------------------------------------------------------------------
@app.command()
def submit(
    file: Annotated[
        str,
        typer.Argument(
            help="Transcript file (txt, speaker lines, JSON, SRT, VTT), recording (WAV, MP3, M4A, FLAC, "
            "OGG/Opus; needs the asr extra), or - for a transcript on standard input."
        ),
    ],
    template: Annotated[str | None, typer.Option("--template", "-t", help="Template id.")] = None,
    features: Annotated[
        str, typer.Option("--features", "-f", help="Comma-separated: enhance,summary.")
    ] = "enhance,summary",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait and print the result.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600.0,
    output_format: Annotated[str, typer.Option("--format", help="Result format: md or json.")] = "md",
    idempotency_key: Annotated[str | None, typer.Option(help="Return the existing job for this key.")] = None,
) -> None:
    """Submit a transcript or a recording; prints the job id (and, with --wait, the result)."""
    from maie.submit import submit as submit_job

    s = settings()
    from maie.inputs import TranscriptText

    source: str | Path = TranscriptText(sys.stdin.read()) if file == "-" else Path(file)
    try:
        job = submit_job(
            source,
            template_id=template,
            features=features.split(","),
            idempotency_key=idempotency_key,
            settings=s,
        )
    except MaieError as exc:
        fail(exc)
    err.print(f"job {job.id} submitted", markup=False)
    if not wait:
        out.print(job.id, markup=False)
        return
    result = _follow(job, timeout)
    _print_result(result, output_format)
    if result.status != "SUCCESS":
        raise typer.Exit(1)


def _follow(job: Job, timeout: float) -> JobResult:
    """Show chunk progress until the job ends; the (large) result is read once, at the end."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        bar = progress.add_task("enhance", total=1)
        while True:
            try:
                status = job.status()
            except MaieError as exc:
                fail(exc)
            if status.state == "UNKNOWN":
                fail(InputError(f"no job {job.id} (unknown id, or its records expired)"))
            total = max(status.chunks_total, 1)
            progress.update(
                bar,
                completed=status.chunks_done,
                total=total,
                description=status.stage or status.state.lower(),
            )
            if status.state in ("SUCCESS", "FAILURE", "CANCELLED"):
                try:
                    result = job.result()
                except MaieError as exc:
                    fail(exc)
                assert result is not None  # the job has ended: its result or its error is stored
                progress.update(bar, completed=total, description=result.status.lower())
                return result
            if time.monotonic() > deadline:
                fail(f"job {job.id} did not finish within {timeout} s", 1)
            time.sleep(0.2)


def _print_result(result: JobResult, output_format: str) -> None:
    if output_format == "json":
        out.print_json(result.model_dump_json())
        return
    if result.error:
        chunk = f" (chunk {result.error.chunk})" if result.error.chunk is not None else ""
        err.print(
            f"maie: job {result.job_id} {result.status.lower()} at stage "
            f"{result.error.stage}{chunk}: {result.error.code}: {result.error.message}",
            markup=False,
        )
        return
    if result.raw_transcript is not None:
        raw = result.raw_transcript
        m = raw.metrics
        out.print(
            f"# Raw transcript ({m.audio_seconds:.1f} s of audio, language {m.language}, "
            f"real-time factor {m.real_time_factor:.2f}, {raw.version.model})\n",
            markup=False,
        )
        for seg in raw.segments:
            out.print(f"[{_clock(seg.start)} - {_clock(seg.end)}] {seg.text}", markup=False, highlight=False)
        out.print("", markup=False)
    if result.enhanced_text is not None:
        out.print("# Enhanced transcript\n", markup=False)
        out.print(result.enhanced_text, markup=False, highlight=False)
        degraded = [c.index for c in result.chunks if c.degraded]
        if degraded:
            out.print(f"\n(chunks kept raw as degraded: {degraded})", markup=False)
    if result.summary is not None:
        out.print(f"\n# Summary ({result.template_id})\n", markup=False)
        out.print(json.dumps(result.summary, indent=2, ensure_ascii=False), markup=False, highlight=False)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:05.2f}"


@app.command()
def status(job_id: str) -> None:
    """Show a job's state and chunk progress."""
    from maie.submit import Job

    try:
        st = Job(job_id, settings()).status()
    except MaieError as exc:
        fail(exc)
    if st.state == "UNKNOWN":
        fail(InputError(f"no job {job_id} (unknown id, or its records expired)"))
    line = f"{st.job_id} {st.state} chunks {st.chunks_done}/{st.chunks_total}"
    if st.stage:
        line += f" stage {st.stage}"
    if st.error:
        line += f" error {st.error.stage}: {st.error.message}"
    out.print(line, markup=False)


@app.command()
def result(
    job_id: str,
    output_format: Annotated[str, typer.Option("--format", help="md or json.")] = "md",
) -> None:
    """Print a finished job's result."""
    from maie.submit import Job

    try:
        res = Job(job_id, settings()).result()
    except MaieError as exc:
        fail(exc)
    if res is None:
        fail(f"job {job_id} is still running", 1)
    _print_result(res, output_format)
    if res.status != "SUCCESS":
        raise typer.Exit(1)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job: revoke its queued tasks; running calls end at their timeout."""
    from maie.submit import Job

    job = Job(job_id, settings())
    try:
        if job.status().state == "UNKNOWN":
            fail(InputError(f"no job {job_id} (unknown id, or its records expired)"))
        job.cancel()
    except MaieError as exc:
        fail(exc)
    out.print(f"{job_id} cancelled", markup=False)


# -- HTTP API ------------------------------------------------------------------------------------
@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    insecure: Annotated[
        bool, typer.Option(help="Serve without SECRET_API_KEY (on 127.0.0.1 only).")
    ] = False,
) -> None:
    """Serve the HTTP API (the previous MAIE's routes; see docs/API.md)."""
    from maie.api.server import run

    s = settings()
    try:
        run(s, host, port, workers, insecure)
    except ConfigError as exc:
        fail(exc)


# -- metrics -------------------------------------------------------------------------------------
@app.command()
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


# -- templates -----------------------------------------------------------------------------------
@templates_app.callback(invoke_without_command=True)
def templates_list(ctx: typer.Context) -> None:
    """List templates: id, language, required fields."""
    if ctx.invoked_subcommand is not None:
        return
    from maie.templates import list_templates

    try:
        found = list_templates(settings().templates_dir)
    except MaieError as exc:
        fail(exc)
    table = Table("id", "language", "required fields")
    for t in found:
        table.add_row(t.id, t.language, ", ".join(t.required_fields))
    out.print(table)


@templates_app.command("show")
def templates_show(template_id: str) -> None:
    """Print a template's JSON Schema."""
    from maie.templates import load_template

    try:
        t = load_template(template_id, settings().templates_dir)
    except MaieError as exc:
        fail(exc)
    out.print(t.schema_json, markup=False, highlight=False)


@templates_app.command("check")
def templates_check(directory: Path) -> None:
    """Check every template bundle in DIRECTORY (or DIRECTORY itself as one bundle)."""
    from maie.templates import check_dir

    if not directory.is_dir():
        fail(InputError(f"{directory} is not a directory"))
    problems = check_dir(directory)
    bad = 0
    for bundle, lines in sorted(problems.items()):
        if lines:
            bad += 1
            for line in lines:
                err.print(line, markup=False)
        else:
            out.print(f"ok {bundle}", markup=False)
    if bad:
        raise typer.Exit(1)


# -- configuration -------------------------------------------------------------------------------
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
    for task in TASKS:
        if s.llm_backend == "vllm_server":
            ep = s.endpoint(task)
            key = "set (masked)" if ep.api_key else "not set"
            out.print(
                f"{task}: endpoint={ep.base_url} model={ep.model_name or '(served model)'} api_key={key}",
                markup=False,
            )
        else:
            t = s.task_settings(task)
            out.print(
                f"{task}: local engine model={t.model} dtype={t.dtype} "
                f"max_model_len={t.max_model_len} max_num_seqs={t.max_num_seqs}",
                markup=False,
            )
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
    """Reach each task's endpoint: list its models and time a one-token completion."""
    from maie.backends import build_backend

    s = settings()
    failed = False
    for task in TASKS:
        if s.llm_backend == "local_vllm":
            model = s.task_settings(task).model
            ok = Path(model).is_dir()
            out.print(
                f"{task}: local engine model {model} "
                f"{'found' if ok else 'NOT FOUND (run scripts/make-dev-model.sh)'}",
                markup=False,
            )
            failed |= not ok
            continue
        ep = s.endpoint(task)
        started = time.monotonic()
        try:
            backend = build_backend(task, s)
            served = backend.list_models()  # type: ignore[attr-defined]
            backend.chat([{"role": "user", "content": "ping"}], max_tokens=1, temperature=0.0)
            out.print(
                f"{task}: ok {ep.base_url} serves {', '.join(served)}; model "
                f"{backend.model}, context {backend.max_model_len} tokens; one-token completion in "
                f"{(time.monotonic() - started) * 1000:.0f} ms",
                markup=False,
            )
        except MaieError as exc:
            failed = True
            err.print(f"{task}: FAILED {ep.base_url}: {' '.join(str(exc).split())}", markup=False)
            err.print(
                f"  hint: is the {task} server running? Check LLM_SERVER__"
                f'{task.upper()}_BASE_URL, then `tail -f logs/app.log | grep "LLM"`',
                markup=False,
            )
    if failed:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
