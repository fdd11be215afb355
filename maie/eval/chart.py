"""The PNG chart of an evaluation report: per-item scores as grouped bars, drawn off-screen."""

from __future__ import annotations

from pathlib import Path

from maie.eval.metrics import PRF
from maie.eval.models import EnhanceReport, Report


def draw_chart(report: Report, path: Path) -> str | None:
    """Draw a bar chart of per-item scores; None when drawn, else why not."""
    if not report.items:
        return "no items"
    try:  # here, not at the top: `maie` starts without matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed"
    labels = [i.id for i in report.items]
    series: dict[str, list[float]] = {}
    if isinstance(report, EnhanceReport):
        title = "Enhancement: per-item scores (failed items at 0)"
        for i in report.items:
            p = i.punctuation or {}
            overall = sum(p.values(), PRF()).f1 if p else 0.0
            series.setdefault("punctuation F1", []).append(overall)
            series.setdefault("'.' F1", []).append(p["."].f1 if p else 0.0)
            series.setdefault("',' F1", []).append(p[","].f1 if p else 0.0)
            series.setdefault("casing accuracy", []).append(i.casing_accuracy or 0.0)
            series.setdefault("words preserved", []).append(i.words_preserved or 0.0)
    else:
        title = f"Summary ({report.template_id}): ROUGE F1 of the main field (failed items at 0)"
        for s in report.items:
            r = s.rouge_main or {}
            series.setdefault("ROUGE-1", []).append(r.get("rouge1", 0.0))
            series.setdefault("ROUGE-2", []).append(r.get("rouge2", 0.0))
            series.setdefault("ROUGE-L", []).append(r.get("rougeL", 0.0))
            series.setdefault("schema-valid", []).append(1.0 if s.schema_valid else 0.0)
    fig = Figure(figsize=(max(6.0, 1.6 * len(labels) + 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        xs = [x + (k - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(
        [label if len(label) <= 28 else label[:27] + "…" for label in labels],
        fontsize=8,
        rotation=20,
        ha="right",
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return None
