"""`maie templates`: list, show and check summary templates."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from maie.cli.console import err, fail, out, settings
from maie.errors import InputError, MaieError

templates_app = typer.Typer(help="List, show and check summary templates.", no_args_is_help=False)


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
