"""`maie eval`: run evaluation data through the pipeline and write a scored report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from maie.cli.console import err, fail, settings
from maie.errors import MaieError
from maie.eval.data import load_jsonl
from maie.eval.markdown import fmt
from maie.eval.metrics import PRF
from maie.eval.models import EnhanceItem, Report
from maie.eval.report import write_report
from maie.eval.runner import eval_enhance, eval_summary

eval_app = typer.Typer(
    help="Run evaluation data (JSONL) through the pipeline and write a scored report.",
    no_args_is_help=True,
)
# Without soft wrap, unlike `console.out`: the results table is fitted to the terminal's width.
_table_out = Console()

_OutOption = Annotated[Path, typer.Option("--out", help="Directory for the report files.")]
_LimitOption = Annotated[int | None, typer.Option("--limit", help="Only the first N items.")]
_IdOption = Annotated[list[str] | None, typer.Option("--id", help="Only the item with this id (repeatable).")]
_TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for each item.")]


def _finish(report: Report, out_dir: Path) -> None:
    path = write_report(report, out_dir)
    table = Table("id", "status", "detail")
    for item in report.items:
        if isinstance(item, EnhanceItem):
            detail = (
                f"punct F1 {fmt(sum((item.punctuation or {}).values(), PRF()).f1)}, "
                f"casing {fmt(item.casing_accuracy)}, preserved {fmt(item.words_preserved)}"
                if item.ok
                else item.error or ""
            )
        else:
            r = item.rouge_main or item.rouge_all or {}
            detail = (
                f"ROUGE-1/2/L {fmt(r.get('rouge1'))} / {fmt(r.get('rouge2'))} / {fmt(r.get('rougeL'))}"
                if item.ok
                else item.error or ""
            )
        table.add_row(item.id, item.status, detail)
    _table_out.print(table)
    _table_out.print(f"report: {path}", markup=False, highlight=False)
    failed = sum(not i.ok for i in report.items)
    if failed:
        err.print(f"maie: {failed} of {len(report.items)} items failed", markup=False)
        raise typer.Exit(1)


@eval_app.command("enhance")
def enhance_command(
    file: Annotated[Path, typer.Argument(help="JSONL with `raw` and `reference` per line.")],
    out: _OutOption = Path("eval-reports"),
    limit: _LimitOption = None,
    timeout: _TimeoutOption = 1800.0,
    item_id: _IdOption = None,
) -> None:
    """Enhance each item's `raw` text and score punctuation, casing and preserved words."""
    try:
        load_jsonl(file, ("raw", "reference"))
        report = eval_enhance(file, settings(), timeout, limit=limit, ids=item_id, console=err)
    except MaieError as exc:
        fail(exc)
    _finish(report, out)


@eval_app.command("summary")
def summary_command(
    file: Annotated[Path, typer.Argument(help="JSONL with `transcript` and `reference_summary` per line.")],
    template: Annotated[str, typer.Option("--template", "-t", help="Template id.")],
    out: _OutOption = Path("eval-reports"),
    limit: _LimitOption = None,
    timeout: _TimeoutOption = 1800.0,
    item_id: _IdOption = None,
    summary_only: Annotated[
        bool, typer.Option("--summary-only", help="Summarize the raw transcript (skip enhancement).")
    ] = False,
) -> None:
    """Summarize each item's `transcript` and score schema validity, ROUGE, latency and tokens."""
    try:
        load_jsonl(file, ("transcript", "reference_summary"))
        report = eval_summary(
            file,
            template,
            settings(),
            timeout,
            enhance_first=not summary_only,
            limit=limit,
            ids=item_id,
            console=err,
        )
    except MaieError as exc:
        fail(exc)
    _finish(report, out)
