"""Writing an evaluation report: the Markdown page, its PNG chart and a JSON file of every figure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from maie.eval.chart import draw_chart
from maie.eval.markdown import render_markdown
from maie.eval.metrics import PRF
from maie.eval.models import EnhanceItem, Report, SummaryItem, SummaryReport


def write_report(report: Report, out_dir: Path) -> Path:
    """Write `<kind>-<data>-<time>.md`, a `.png` chart and a `.json` of all figures; returns the .md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report.run.started_at).strftime("%Y%m%d-%H%M%S")
    stem = f"{report.kind}-{Path(report.run.source).stem}-{stamp}"
    md, png, js = out_dir / f"{stem}.md", out_dir / f"{stem}.png", out_dir / f"{stem}.json"
    not_drawn = draw_chart(report, png)
    md.write_text(render_markdown(report, png.name, not_drawn), encoding="utf-8")
    js.write_text(json.dumps(_report_json(report), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return md


def _prf_json(scores: dict[str, PRF] | None) -> dict[str, Any] | None:
    if scores is None:
        return None
    overall = sum((v for k, v in scores.items() if k != "overall"), PRF())
    return {**{k: v.to_json() for k, v in scores.items()}, "overall": overall.to_json()}


def _report_json(report: Report) -> dict[str, Any]:
    def items(values: Sequence[EnhanceItem | SummaryItem]) -> list[dict[str, Any]]:
        rows = []
        for value in values:
            row = dict(vars(value))
            if isinstance(value, EnhanceItem):
                row["punctuation"] = _prf_json(value.punctuation)
                row["raw_punctuation"] = _prf_json(value.raw_punctuation)
                row["casing_accuracy"] = value.casing_accuracy
                row["words_preserved"] = value.words_preserved
            rows.append(row)
        return rows

    data: dict[str, Any] = {"kind": report.kind, "run": vars(report.run), "items": items(report.items)}
    if isinstance(report, SummaryReport):
        data["template_id"] = report.template_id
        data["features"] = report.features
    else:
        data["punctuation"] = {k: v.to_json() for k, v in report.punctuation().items()}
    return data
