"""Evaluation reports: one row per item, and the run they came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from maie.eval.metrics import MARKS, PRF


@dataclass
class EnhanceItem:
    id: str
    n_words: int
    status: str  # SUCCESS, or FAILURE / CANCELLED / TIMEOUT / ERROR: the item failed
    error: str | None = None
    seconds: float = 0.0
    punctuation: dict[str, PRF] | None = None
    casing: tuple[int, int] | None = None  # words cased right, words compared
    preserved: tuple[int, int] | None = None  # raw words kept, raw words
    chunks: int = 0
    degraded_chunks: int = 0
    failed_chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    output: str | None = None
    # The same scores for the raw input itself: what enhancement starts from.
    raw_punctuation: dict[str, PRF] | None = None
    raw_casing: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"

    @property
    def casing_accuracy(self) -> float | None:
        return _ratio(self.casing)

    @property
    def words_preserved(self) -> float | None:
        return _ratio(self.preserved)


@dataclass
class SummaryItem:
    id: str
    n_words: int
    status: str
    error: str | None = None
    seconds: float = 0.0
    schema_valid: bool = False
    schema_errors: list[str] = field(default_factory=list)
    main_field: str | None = None
    rouge_main: dict[str, float] | None = None  # the main text field against reference_summary
    rouge_all: dict[str, float] | None = None  # every string of the summary, joined
    prompt_tokens: int = 0
    completion_tokens: int = 0
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"


@dataclass
class Run:
    """Where the items came from, when and for how long they ran, and the backends that served them."""

    source: str
    started_at: str
    settings: list[str]
    served_by: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class EnhanceReport:
    run: Run
    items: list[EnhanceItem]
    kind: Literal["enhance"] = "enhance"

    @property
    def completed(self) -> list[EnhanceItem]:
        return [i for i in self.items if i.ok]

    def punctuation(self, raw: bool = False) -> dict[str, PRF]:
        """Counts summed over the completed items, per mark and "overall" (of the raw input if `raw`)."""
        total = {key: PRF() for key in (*MARKS, "overall")}
        for item in self.completed:
            scores = item.raw_punctuation if raw else item.punctuation
            assert scores is not None
            for key, prf in scores.items():
                total[key] = total[key] + prf
                total["overall"] = total["overall"] + prf
        return total


@dataclass
class SummaryReport:
    run: Run
    template_id: str
    features: list[str]
    items: list[SummaryItem]
    kind: Literal["summary"] = "summary"

    @property
    def completed(self) -> list[SummaryItem]:
        return [i for i in self.items if i.ok]


Report = EnhanceReport | SummaryReport


def _ratio(pair: tuple[int, int] | None) -> float | None:
    # (right, counted): 1.0 when nothing was counted, as the metric functions score it.
    if pair is None:
        return None
    return pair[0] / pair[1] if pair[1] else 1.0


def pooled_ratio(pairs: Sequence[tuple[int, int] | None]) -> float | None:
    """The ratio of the counts summed over items (micro average); None when no item has any."""
    good = [p for p in pairs if p is not None]
    if not good:
        return None
    return _ratio((sum(p[0] for p in good), sum(p[1] for p in good)))
