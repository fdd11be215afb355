"""Evaluation runs: each item of a JSONL file through the real pipeline, scored into a report.

Items go through `maie.submit` and the workers of whatever backend is configured, one after another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from maie.backends.kinds import kind_of
from maie.errors import MaieError
from maie.eval.data import load_jsonl, select_items
from maie.eval.metrics import casing_counts, preserved_counts, punctuation_counts, rouge, split_words
from maie.eval.models import EnhanceItem, EnhanceReport, Run, SummaryItem, SummaryReport
from maie.names import TASKS
from maie.settings import Settings, load_settings

if TYPE_CHECKING:
    from maie.result import JobResult
    from maie.templates import Template

# The main text field of a summary, first match wins; else every string of the summary is used.
MAIN_FIELDS = ("summary", "tom_tat", "abstract", "overview")

_T = TypeVar("_T")


def _describe_settings(s: Settings) -> list[str]:
    """Backend, endpoints and models per task, and the chunking settings; never an API key."""
    lines = [f"LLM_BACKEND={s.llm_backend}"]
    kind = kind_of(s)
    for task in TASKS:
        cfg = s.task_settings(task)
        where = kind.describe(task, s).line
        lines.append(f"{task}: {where}, temperature {cfg.temperature}, max_tokens {cfg.max_tokens}")
    lines.append(
        f"CHUNK_MAX_TOKENS={s.chunk_max_tokens}, ENHANCE_MAX_EDIT_RATE={s.enhance_max_edit_rate}, "
        f"ENHANCE_ON_FAILURE={s.enhance_on_failure}, ENHANCE_MODE={s.enhance_mode}"
    )
    return lines


def _served_by(result: JobResult, into: dict[str, str]) -> None:
    for stage, v in result.versions.items():
        decoding = f", {v.decoding} decoding" if v.decoding else ""
        into.setdefault(
            stage,
            f"{v.backend} {v.base_url} model {v.model} (prompt sha256 {v.prompt_sha256[:12]}{decoding})",
        )


class _Runner:
    """Submits items one after another and waits for each, with a progress display on stderr."""

    def __init__(self, settings: Settings, timeout: float, console: Console | None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.console = console or Console(stderr=True)

    def run(
        self,
        items: Sequence[dict[str, Any]],
        text_field: str,
        features: list[str],
        template_id: str | None,
    ) -> Iterator[tuple[dict[str, Any], JobResult | str, float]]:
        """Yield (item, result or error message, seconds) per item, in order."""
        from maie.submit import submit

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            overall = progress.add_task("items", total=len(items))
            chunks = progress.add_task("chunks", total=1)
            for item in items:
                progress.update(overall, description=f"items ({item['id']})")
                progress.reset(chunks, total=1, description="submitting")
                started = time.monotonic()
                try:
                    job = submit(
                        item[text_field], template_id=template_id, features=features, settings=self.settings
                    )
                    outcome: JobResult | str = self._follow(job, progress, chunks)
                except MaieError as exc:
                    outcome = f"{exc.code}: {exc}"
                yield item, outcome, round(time.monotonic() - started, 3)
                progress.advance(overall)

    def _follow(self, job: Any, progress: Progress, bar: Any) -> JobResult | str:
        deadline = time.monotonic() + self.timeout
        while True:
            result: JobResult | None = job.result()
            status = job.status()
            if result is not None:
                progress.update(bar, completed=max(status.chunks_total, 1), description=result.status.lower())
                return result
            progress.update(
                bar,
                completed=status.chunks_done,
                total=max(status.chunks_total, 1),
                description=status.stage or status.state.lower(),
            )
            if time.monotonic() > deadline:
                job.cancel()
                return f"timeout: no result within {self.timeout:g} s (job {job.id} cancelled)"
            time.sleep(0.25)


def _ran(
    row: EnhanceItem | SummaryItem, outcome: JobResult | str, served_by: dict[str, str]
) -> JobResult | None:
    """The result of a job that ended, its tokens and backends noted on `row`.

    None, the row failed, when the job could not be submitted or did not end in time.
    """
    if isinstance(outcome, str):
        row.status = "TIMEOUT" if outcome.startswith("timeout") else "ERROR"
        row.error = outcome
        return None
    _served_by(outcome, served_by)
    row.prompt_tokens, row.completion_tokens = _tokens(outcome)
    return outcome


def _output(row: EnhanceItem | SummaryItem, result: JobResult, output: _T | None, missing: str) -> _T | None:
    """`output` if the job succeeded with it; else None, the row failed with the job's error or `missing`."""
    if result.status == "SUCCESS" and output is not None:
        return output
    row.status = result.status if result.status != "SUCCESS" else "ERROR"
    row.error = _error_text(result) if result.status != "SUCCESS" else missing
    return None


def _error_text(result: JobResult) -> str:
    if result.error is None:
        return result.status.lower()
    chunk = f" chunk {result.error.chunk}" if result.error.chunk is not None else ""
    return f"{result.error.stage}{chunk}: {result.error.code}: {result.error.message}"


def _tokens(result: JobResult) -> tuple[int, int]:
    return (
        sum(m.prompt_tokens for m in result.metrics.values()),
        sum(m.completion_tokens for m in result.metrics.values()),
    )


def eval_enhance(
    path: Path,
    settings: Settings | None = None,
    timeout: float = 1800.0,
    *,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    console: Console | None = None,
) -> EnhanceReport:
    """Enhance each item's `raw` (features={"enhance"}) and score it against its `reference`.

    `raw` is submitted as it is: one unpunctuated, lowercase line without speaker labels, which the
    pipeline cuts into chunks between words. Items that fail or time out stay in the report.
    """
    items = select_items(load_jsonl(path, ("raw", "reference")), ids, limit)
    s = settings or load_settings()
    run = Run(str(path), _now(), _describe_settings(s))
    report = EnhanceReport(run, [])
    started = time.monotonic()
    for item, outcome, seconds in _Runner(s, timeout, console).run(items, "raw", ["enhance"], None):
        row = EnhanceItem(str(item["id"]), len(split_words(item["raw"])), "ERROR", seconds=seconds)
        row.raw_punctuation = punctuation_counts(item["raw"], item["reference"])
        row.raw_casing = casing_counts(item["raw"], item["reference"])
        report.items.append(row)
        result = _ran(row, outcome, run.served_by)
        if result is None:
            continue
        row.chunks = len(result.chunks)
        row.degraded_chunks = sum(c.degraded for c in result.chunks)
        row.failed_chunks = sum(c.failed for c in result.chunks)
        text = _output(row, result, result.enhanced_text, "no enhanced text")
        if text is None:
            continue
        row.status = "SUCCESS"
        row.output = text
        row.punctuation = punctuation_counts(text, item["reference"])
        row.casing = casing_counts(text, item["reference"])
        row.preserved = preserved_counts(text, item["raw"])
    run.seconds = round(time.monotonic() - started, 3)
    return report


def main_field(template: Template) -> str | None:
    """The template's main text field: the first of MAIN_FIELDS that is a string property."""
    props = template.schema.get("properties", {})
    for name in MAIN_FIELDS:
        kind = props.get(name, {}).get("type")
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            return name
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def eval_summary(
    path: Path,
    template_id: str,
    settings: Settings | None = None,
    timeout: float = 1800.0,
    *,
    enhance_first: bool = True,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    console: Console | None = None,
) -> SummaryReport:
    """Summarize each item's `transcript` with a template and score it against `reference_summary`.

    The features are enhance+summary (the summary reads the enhanced transcript), or summary alone
    with `enhance_first=False`. ROUGE is computed on the template's main text field and on every
    string of the summary joined by newlines.
    """
    from maie.templates import load_template

    items = select_items(load_jsonl(path, ("transcript", "reference_summary")), ids, limit)
    s = settings or load_settings()
    template = load_template(template_id, s.templates_dir)
    features = ["enhance", "summary"] if enhance_first else ["summary"]
    main = main_field(template)
    run = Run(str(path), _now(), _describe_settings(s))
    report = SummaryReport(run, template.id, features, [])
    started = time.monotonic()
    runner = _Runner(s, timeout, console)
    for item, outcome, seconds in runner.run(items, "transcript", features, template.id):
        row = SummaryItem(str(item["id"]), len(item["transcript"].split()), "ERROR", seconds=seconds)
        row.main_field = main
        report.items.append(row)
        result = _ran(row, outcome, run.served_by)
        if result is None:
            continue
        summary = _output(row, result, result.summary, "no summary")
        if summary is None:
            continue
        row.summary = summary
        row.schema_errors = template.validate(summary)
        row.schema_valid = not row.schema_errors
        if not row.schema_valid:
            row.status = "INVALID"
            row.error = "summary does not match the schema: " + "; ".join(row.schema_errors[:3])
            continue
        row.status = "SUCCESS"
        reference = item["reference_summary"]
        main_value = summary.get(main) if main else None
        if isinstance(main_value, str):
            row.rouge_main = rouge(main_value, reference)
        row.rouge_all = rouge("\n".join(_strings(summary)), reference)
    run.seconds = round(time.monotonic() - started, 3)
    return report


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
