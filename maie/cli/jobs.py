"""The job commands: submit a transcript or a recording, follow it, show its status or result, cancel it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from maie.cli.console import err, fail, out, settings
from maie.errors import InputError, MaieError
from maie.result import JobResult

if TYPE_CHECKING:
    from maie.submit import Job


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
