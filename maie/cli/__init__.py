"""The `maie` command line: submit, follow and inspect jobs, templates and configuration.

Errors print one line on stderr. Exit codes: 0 ok; 1 the job or a check failed, or a service it
needs (Redis, the broker) could not be reached: trying again later can help; 2 the input or the
configuration was refused (nothing was queued).
"""

from __future__ import annotations

import typer

from maie.cli import jobs, servers
from maie.cli.config import config_app
from maie.cli.eval import eval_app  # matplotlib is imported only when a report is drawn
from maie.cli.templates import templates_app

app = typer.Typer(
    help="MAIE: speech transcripts to clean text and structured summaries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(templates_app, name="templates")
app.add_typer(config_app, name="config")
app.add_typer(eval_app, name="eval")
for command in (jobs.submit, jobs.status, jobs.result, jobs.cancel, servers.api, servers.metrics):
    app.command()(command)


def main() -> None:
    app()
