"""The Markdown page of an evaluation report: how it ran, an aggregate table, a per-item table."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from maie.eval.metrics import MARKS, PRF
from maie.eval.models import EnhanceItem, EnhanceReport, Report, SummaryItem, SummaryReport, pooled_ratio

_LEFT, _RIGHT = "---", "---:"  # column alignments
_ROUGE = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"))

# (heading, alignment) of each per-item table's columns.
_ENHANCE_COLUMNS = (
    ("id", _LEFT),
    ("words", _RIGHT),
    ("status", _LEFT),
    *((name, _RIGHT) for name in ("punct F1", "'.' F1", "',' F1", "'?' F1", "casing", "preserved")),
    *((name, _RIGHT) for name in ("chunks", "degraded", "seconds")),
)
_SUMMARY_COLUMNS = (
    ("id", _LEFT),
    ("words", _RIGHT),
    ("status", _LEFT),
    ("schema-valid", _LEFT),
    *((name, _RIGHT) for name in ("R-1", "R-2", "R-L", "R-1 all", "R-2 all", "R-L all")),
    *((name, _RIGHT) for name in ("prompt tok", "completion tok", "seconds")),
)


def fmt(value: float | None, digits: int = 3) -> str:
    """A score with `digits` decimals; a dash for no value."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def render_markdown(report: Report, chart: str, not_drawn: str | None) -> str:
    """The whole page; it links the chart file `chart` unless `not_drawn` says why there is none."""
    title = "Enhancement" if isinstance(report, EnhanceReport) else f"Summary ({report.template_id})"
    lines = [
        f"# MAIE evaluation: {title}",
        "",
        f"- Date: {report.run.started_at} (UTC); run took {report.run.seconds:.1f} s",
        f"- Data: `{report.run.source}` ({len(report.items)} items: "
        + ", ".join(f"`{i.id}`" for i in report.items)
        + ")",
        f"- Machine: {_machine()}",
        "- Configuration (as this client read it):",
        *[f"  - {_md_escape(line)}" for line in report.run.settings],
    ]
    if isinstance(report, SummaryReport):
        lines.append(f"- Features: {', '.join(report.features)}")
    if report.run.served_by:
        lines.append("- Served by (as the job results report it):")
        lines += [f"  - {stage}: {_md_escape(text)}" for stage, text in sorted(report.run.served_by.items())]
    lines.append("")
    if isinstance(report, EnhanceReport):
        lines += _enhance_sections(report)
    else:
        lines += _summary_sections(report)
    if not_drawn:
        lines += ["", f"(No chart: {not_drawn}.)"]
    else:
        lines += ["", f"![per-item scores]({chart})"]
    return "\n".join(lines) + "\n"


def _enhance_sections(report: EnhanceReport) -> list[str]:
    done = report.completed
    ok = bool(done)
    punct = report.punctuation()
    chunks = sum(i.chunks for i in report.items)
    degraded = sum(i.degraded_chunks for i in report.items)
    failed_chunks = sum(i.failed_chunks for i in report.items)
    aggregate: list[tuple[str, object]] = []
    for key in ("overall", *MARKS):
        prf = punct[key]
        name = "punctuation F1 overall" if key == "overall" else f"punctuation F1 {key!r}"
        aggregate.append(
            (
                name,
                f"{fmt(prf.f1 if ok else None)} (P {fmt(prf.precision if ok else None)}, "
                f"R {fmt(prf.recall if ok else None)}, support {prf.support})",
            )
        )
    aggregate += [
        ("casing accuracy", fmt(pooled_ratio([i.casing for i in done]))),
        (
            "punctuation F1 overall of the raw input (baseline)",
            fmt(report.punctuation(raw=True)["overall"].f1 if ok else None),
        ),
        ("casing accuracy of the raw input (baseline)", fmt(pooled_ratio([i.raw_casing for i in done]))),
        ("words preserved", fmt(pooled_ratio([i.preserved for i in done]))),
        ("degraded chunk rate", f"{fmt(degraded / chunks if chunks else None)} ({degraded} of {chunks})"),
        (
            "failed chunk rate",
            f"{fmt(failed_chunks / chunks if chunks else None)} ({failed_chunks} of {chunks})",
        ),
        _latency(done),
        _tokens(report.items),
    ]
    rows = []
    for i in report.items:
        f1: dict[str, float] = {k: v.f1 for k, v in (i.punctuation or {}).items()}
        overall = sum((i.punctuation or {}).values(), PRF()).f1 if i.punctuation else None
        rows.append(
            (
                _md_escape(i.id),
                i.n_words,
                i.status,
                fmt(overall),
                *(fmt(f1.get(mark)) for mark in (".", ",", "?")),
                fmt(i.casing_accuracy),
                fmt(i.words_preserved),
                i.chunks,
                i.degraded_chunks,
                f"{i.seconds:.2f}",
            )
        )
    intro = "Scores over the completed items, summed over their words (micro average)."
    return _sections(report, intro, aggregate, _ENHANCE_COLUMNS, rows)


def _summary_sections(report: SummaryReport) -> list[str]:
    done = report.completed
    n = len(report.items)
    valid = sum(i.schema_valid for i in report.items)
    main = done[0].main_field if done else (report.items[0].main_field if report.items else None)
    aggregate: list[tuple[str, object]] = [
        ("schema-valid rate", f"{fmt(valid / n if n else None)} ({valid} of {n})")
    ]
    for attr, scored in (("rouge_main", "main field"), ("rouge_all", "all strings")):
        for key, name in _ROUGE:
            aggregate.append(
                (
                    f"{name} F1 {scored}",
                    f"{fmt(_rouge_mean(done, attr, key))} "
                    f"(all items: {fmt(_rouge_mean(report.items, attr, key, n))})",
                )
            )
    prompt = [i.prompt_tokens for i in report.items]
    completion = [i.completion_tokens for i in report.items]
    aggregate += [
        _latency(done),
        _tokens(report.items),
        ("tokens per item (prompt / completion)", f"{fmt(_mean(prompt), 0)} / {fmt(_mean(completion), 0)}"),
    ]
    rows = []
    for i in report.items:
        m, a = i.rouge_main or {}, i.rouge_all or {}
        rows.append(
            (
                _md_escape(i.id),
                i.n_words,
                i.status,
                "yes" if i.schema_valid else "no",
                *(fmt(m.get(key)) for key, _ in _ROUGE),
                *(fmt(a.get(key)) for key, _ in _ROUGE),
                i.prompt_tokens,
                i.completion_tokens,
                f"{i.seconds:.2f}",
            )
        )
    intro = (
        f"ROUGE F1 against `reference_summary`: of the main field (`{main or 'none'}`) and of every "
        "string of the summary joined; means over the completed items, and over all items with a "
        "failed item scoring 0."
    )
    return _sections(report, intro, aggregate, _SUMMARY_COLUMNS, rows)


def _sections(
    report: Report,
    intro: str,
    aggregate: Sequence[tuple[str, object]],
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[object]],
) -> list[str]:
    """The aggregate table (the item counts first), the per-item table and the failures."""
    n, ok = len(report.items), len(report.completed)
    counts: list[tuple[str, object]] = [("items", n), ("items completed", ok), ("items failed", n - ok)]
    lines = ["## Aggregate", "", intro, ""]
    lines += _table((("metric", _LEFT), ("value", _LEFT)), [*counts, *aggregate])
    lines += ["", "## Items", ""]
    lines += _table(columns, rows)
    failed = [i for i in report.items if not i.ok]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- `{i.id}` {i.status}: {_md_escape(i.error or 'unknown')}" for i in failed]
    return lines


def _table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table: its heading row, its alignment row, then one line per row."""
    return [
        _row([name for name, _ in columns]),
        "|" + "|".join(align for _, align in columns) + "|",
        *(_row(row) for row in rows),
    ]


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _latency(done: Sequence[EnhanceItem | SummaryItem]) -> tuple[str, str]:
    seconds = [i.seconds for i in done]
    if not seconds:
        return ("latency per item (s)", "–")
    return (
        "latency per item (s)",
        f"mean {statistics.fmean(seconds):.2f}, median {statistics.median(seconds):.2f}, "
        f"max {max(seconds):.2f}",
    )


def _tokens(items: Sequence[EnhanceItem | SummaryItem]) -> tuple[str, str]:
    prompt = sum(i.prompt_tokens for i in items)
    return ("tokens (prompt / completion)", f"{prompt} / {sum(i.completion_tokens for i in items)}")


def _rouge_mean(items: Sequence[SummaryItem], attr: str, key: str, total: int | None = None) -> float | None:
    values = [getattr(i, attr)[key] for i in items if getattr(i, attr) is not None]
    if total is not None:  # every item counts; an item without a score scores 0
        return sum(values) / total if total else None
    return _mean(values)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _md_escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram = ""
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}){ram}, "
        f"Python {platform.python_version()}"
    )
