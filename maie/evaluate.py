"""Quality evaluation: score enhanced text and summaries against human references.

Two layers:

* Pure metric functions, with no Celery and no I/O: `punctuation_scores`, `casing_accuracy`,
  `words_preserved` and `rouge`.
* Runners that send every item of a JSONL file through the real pipeline (`maie.submit` and the
  workers of whatever backend is configured), score the results, and `write_report` that renders a
  Markdown report with a PNG chart next to it. `eval_app` is the `maie eval` command group.

Word alignment. Enhancement text is split into words with the regular expression `[\\w']+` (the
words of the pipeline's own faithfulness check), apostrophes at either end stripped; a word's
normalized form is its lowercase. Hypothesis and reference word sequences are aligned with a
word-level Levenshtein alignment (rapidfuzz `editops`): matched and substituted words form aligned
pairs, deleted reference words and inserted hypothesis words are unaligned.

Punctuation. The mark attached after a word is the first of `.` `,` `?` `!` found between the word
and the next word (so `word."` carries `.` and `?!` counts as `?`); other characters are ignored.
Per mark: a true positive is an aligned pair where both words carry that mark; a false positive is
a hypothesis word carrying it whose reference word carries another mark, none, or does not exist
(inserted word); a false negative is the converse. "overall" sums the counts of the four marks
(micro average), so a wrong mark counts once as a false positive and once as a false negative.
With nothing to find and nothing claimed, precision, recall and F1 are 1.0; precision with no
claims but something to find is 0.0, and likewise recall.

ROUGE. Lowercase, words are `\\w+` runs (so "it's" is two words), no stemming, no stop-word
removal. ROUGE-1/2 F1 come from clipped n-gram overlap counts, ROUGE-L F1 from the longest common
subsequence of the two whole texts (not the per-sentence "ROUGE-Lsum"). The figures follow the
usual definitions but are not byte-identical to the official ROUGE-1.5.5 script or to the
`rouge-score` package (which keeps only [a-z0-9] and can apply a Porter stemmer).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rapidfuzz.distance import LCSseq, Levenshtein
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from maie.errors import ConfigError, InputError, MaieError
from maie.names import TASKS
from maie.settings import Settings, load_settings

if TYPE_CHECKING:
    from maie.result import JobResult
    from maie.templates import Template

__all__ = [
    "MARKS",
    "PRF",
    "punctuation_scores",
    "casing_accuracy",
    "words_preserved",
    "rouge",
    "load_jsonl",
    "EnhanceItem",
    "EnhanceReport",
    "SummaryItem",
    "SummaryReport",
    "eval_enhance",
    "eval_summary",
    "write_report",
    "eval_app",
]

MARKS: tuple[str, ...] = (".", ",", "?", "!")
MARK_NAMES = {".": "period", ",": "comma", "?": "question mark", "!": "exclamation mark"}
# The main text field of a summary, first match wins; else every string of the summary is used.
MAIN_FIELDS = ("summary", "tom_tat", "abstract", "overview")

_WORD = re.compile(r"[\w']+")
_ROUGE_WORD = re.compile(r"\w+")


# --- metrics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PRF:
    """Counts of one punctuation mark (or all of them) and the precision, recall and F1 they give."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def support(self) -> int:
        """How many reference words carry the mark."""
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        claimed = self.tp + self.fp
        if claimed:
            return self.tp / claimed
        return 1.0 if self.fn == 0 else 0.0

    @property
    def recall(self) -> float:
        if self.support:
            return self.tp / self.support
        return 1.0 if self.fp == 0 else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
        }


@dataclass(frozen=True)
class _Word:
    norm: str  # lowercase, apostrophes at either end stripped
    surface: str  # as written, apostrophes at either end stripped
    mark: str | None  # the punctuation mark after the word


def _words(text: str) -> list[_Word]:
    found: list[tuple[str, int, int]] = []
    for m in _WORD.finditer(text):
        surface = m.group(0).strip("'")
        if surface:
            found.append((surface, m.start(), m.end()))
    words = []
    for i, (surface, _start, end) in enumerate(found):
        gap = text[end : found[i + 1][1]] if i + 1 < len(found) else text[end:]
        mark = next((c for c in gap if c in MARKS), None)
        words.append(_Word(surface.lower(), surface, mark))
    return words


def _align(ref: Sequence[str], hyp: Sequence[str]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Aligned (ref, hyp) index pairs, unaligned ref indexes, unaligned hyp indexes."""
    pairs: list[tuple[int, int]] = []
    ref_only: list[int] = []
    hyp_only: list[int] = []
    i = j = 0
    for op in Levenshtein.editops(ref, hyp):
        while i < op.src_pos and j < op.dest_pos:
            pairs.append((i, j))
            i += 1
            j += 1
        if op.tag == "delete":
            ref_only.append(i)
            i += 1
        elif op.tag == "insert":
            hyp_only.append(j)
            j += 1
        else:
            pairs.append((i, j))
            i += 1
            j += 1
    while i < len(ref) and j < len(hyp):
        pairs.append((i, j))
        i += 1
        j += 1
    ref_only.extend(range(i, len(ref)))
    hyp_only.extend(range(j, len(hyp)))
    return pairs, ref_only, hyp_only


def _punctuation_counts(hypothesis: str, reference: str) -> dict[str, PRF]:
    ref, hyp = _words(reference), _words(hypothesis)
    pairs, ref_only, hyp_only = _align([w.norm for w in ref], [w.norm for w in hyp])
    counts = {m: [0, 0, 0] for m in MARKS}  # tp, fp, fn
    for i, j in pairs:
        r, h = ref[i].mark, hyp[j].mark
        if r is not None and r == h:
            counts[r][0] += 1
            continue
        if h is not None:
            counts[h][1] += 1
        if r is not None:
            counts[r][2] += 1
    for j in hyp_only:
        if (h := hyp[j].mark) is not None:
            counts[h][1] += 1
    for i in ref_only:
        if (r := ref[i].mark) is not None:
            counts[r][2] += 1
    return {m: PRF(*c) for m, c in counts.items()}


def punctuation_scores(hypothesis: str, reference: str) -> dict[str, PRF]:
    """Precision, recall and F1 of `.` `,` `?` `!` after aligned words, per mark and "overall".

    See the module docstring for the alignment and the counting rules.
    """
    scores = _punctuation_counts(hypothesis, reference)
    overall = PRF()
    for prf in scores.values():
        overall = overall + prf
    return {**scores, "overall": overall}


def _casing_counts(hypothesis: str, reference: str) -> tuple[int, int]:
    ref, hyp = _words(reference), _words(hypothesis)
    pairs, _, _ = _align([w.norm for w in ref], [w.norm for w in hyp])
    same = [(ref[i], hyp[j]) for i, j in pairs if ref[i].norm == hyp[j].norm]
    return sum(r.surface == h.surface for r, h in same), len(same)


def casing_accuracy(hypothesis: str, reference: str) -> float:
    """Share of aligned words with the same normalized form that are also cased exactly alike.

    1.0 when no word pair matches (nothing to judge).
    """
    correct, total = _casing_counts(hypothesis, reference)
    return correct / total if total else 1.0


def _preserved_counts(hypothesis: str, raw: str) -> tuple[int, int]:
    before = [w.norm for w in _words(raw)]
    after = [w.norm for w in _words(hypothesis)]
    lost = sum(op.tag != "insert" for op in Levenshtein.editops(before, after))
    return len(before) - lost, len(before)


def words_preserved(hypothesis: str, raw: str) -> float:
    """Share of the raw words found unchanged, in order, in the hypothesis (word-level alignment).

    A dropped or substituted raw word is not preserved; inserted words do not count. 1.0 for an
    empty raw text.
    """
    kept, total = _preserved_counts(hypothesis, raw)
    return kept / total if total else 1.0


def _rouge_tokens(text: str) -> list[str]:
    return _ROUGE_WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if not overlap or not hyp_total or not ref_total:
        return 0.0
    p, r = overlap / hyp_total, overlap / ref_total
    return 2 * p * r / (p + r)


def rouge(hypothesis: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 ("rouge1", "rouge2", "rougeL"); see the module docstring."""
    hyp, ref = _rouge_tokens(hypothesis), _rouge_tokens(reference)
    scores: dict[str, float] = {}
    for n in (1, 2):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        scores[f"rouge{n}"] = _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))
    scores["rougeL"] = _f1(int(LCSseq.similarity(hyp, ref)), len(hyp), len(ref))
    return scores


# --- data ----------------------------------------------------------------------------------------


def load_jsonl(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """Read a JSONL file whose lines are objects holding non-empty strings under `required`.

    Raises InputError (one line) for a missing, unreadable, empty or malformed file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {number}: not valid JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise InputError(f"{path} line {number}: expected a JSON object, got {type(item).__name__}")
        for name in required:
            value = item.get(name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{path} line {number}: missing or empty string field '{name}'")
        item.setdefault("id", f"line-{number}")
        item["id"] = str(item["id"])
        items.append(item)
    if not items:
        raise InputError(f"{path}: no items")
    return items


def _select(
    items: list[dict[str, Any]], ids: Sequence[str] | None, limit: int | None
) -> list[dict[str, Any]]:
    if ids:
        known = {str(item["id"]) for item in items}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InputError(f"no item with id {', '.join(map(repr, unknown))}")
        items = [item for item in items if item["id"] in ids]
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        items = items[:limit]
    return items


# --- reports -------------------------------------------------------------------------------------


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
class _Run:
    source: str
    started_at: str
    settings: list[str]
    served_by: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class EnhanceReport:
    run: _Run
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
    run: _Run
    template_id: str
    features: list[str]
    items: list[SummaryItem]
    kind: Literal["summary"] = "summary"

    @property
    def completed(self) -> list[SummaryItem]:
        return [i for i in self.items if i.ok]


Report = EnhanceReport | SummaryReport


def _ratio(pair: tuple[int, int] | None) -> float | None:
    if pair is None:
        return None
    return pair[0] / pair[1] if pair[1] else 1.0


def _sum_pairs(pairs: Sequence[tuple[int, int] | None]) -> float | None:
    good = [p for p in pairs if p is not None]
    if not good:
        return None
    return _ratio((sum(p[0] for p in good), sum(p[1] for p in good)))


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


# --- running items through the pipeline ----------------------------------------------------------


def _describe_settings(s: Settings) -> list[str]:
    """Backend, endpoints and models per task, and the chunking settings; never an API key."""
    lines = [f"LLM_BACKEND={s.llm_backend}"]
    for task in TASKS:
        cfg = s.task_settings(task)
        if s.llm_backend == "vllm_server":
            ep = s.endpoint(task)
            where = f"endpoint {ep.base_url}, model {ep.model_name or '(served model)'}"
        else:
            where = f"in-process engine, model {cfg.model}, max_model_len {cfg.max_model_len}"
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
    items = _select(load_jsonl(path, ("raw", "reference")), ids, limit)
    s = settings or load_settings()
    run = _Run(str(path), _now(), _describe_settings(s))
    report = EnhanceReport(run, [])
    started = time.monotonic()
    for item, outcome, seconds in _Runner(s, timeout, console).run(items, "raw", ["enhance"], None):
        row = EnhanceItem(str(item["id"]), len(_words(item["raw"])), "ERROR", seconds=seconds)
        row.raw_punctuation = _punctuation_counts(item["raw"], item["reference"])
        row.raw_casing = _casing_counts(item["raw"], item["reference"])
        report.items.append(row)
        if isinstance(outcome, str):
            row.status = "TIMEOUT" if outcome.startswith("timeout") else "ERROR"
            row.error = outcome
            continue
        _served_by(outcome, run.served_by)
        row.prompt_tokens, row.completion_tokens = _tokens(outcome)
        row.chunks = len(outcome.chunks)
        row.degraded_chunks = sum(c.degraded for c in outcome.chunks)
        row.failed_chunks = sum(c.failed for c in outcome.chunks)
        if outcome.status != "SUCCESS" or outcome.enhanced_text is None:
            row.status = outcome.status if outcome.status != "SUCCESS" else "ERROR"
            row.error = _error_text(outcome) if outcome.status != "SUCCESS" else "no enhanced text"
            continue
        text = outcome.enhanced_text
        row.status = "SUCCESS"
        row.output = text
        row.punctuation = _punctuation_counts(text, item["reference"])
        row.casing = _casing_counts(text, item["reference"])
        row.preserved = _preserved_counts(text, item["raw"])
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

    items = _select(load_jsonl(path, ("transcript", "reference_summary")), ids, limit)
    s = settings or load_settings()
    template = load_template(template_id, s.templates_dir)
    features = ["enhance", "summary"] if enhance_first else ["summary"]
    main = main_field(template)
    run = _Run(str(path), _now(), _describe_settings(s))
    report = SummaryReport(run, template.id, features, [])
    started = time.monotonic()
    runner = _Runner(s, timeout, console)
    for item, outcome, seconds in runner.run(items, "transcript", features, template.id):
        row = SummaryItem(str(item["id"]), len(item["transcript"].split()), "ERROR", seconds=seconds)
        row.main_field = main
        report.items.append(row)
        if isinstance(outcome, str):
            row.status = "TIMEOUT" if outcome.startswith("timeout") else "ERROR"
            row.error = outcome
            continue
        _served_by(outcome, run.served_by)
        row.prompt_tokens, row.completion_tokens = _tokens(outcome)
        if outcome.status != "SUCCESS" or outcome.summary is None:
            row.status = outcome.status if outcome.status != "SUCCESS" else "ERROR"
            row.error = _error_text(outcome) if outcome.status != "SUCCESS" else "no summary"
            continue
        row.summary = outcome.summary
        row.schema_errors = template.validate(outcome.summary)
        row.schema_valid = not row.schema_errors
        if not row.schema_valid:
            row.status = "INVALID"
            row.error = "summary does not match the schema: " + "; ".join(row.schema_errors[:3])
            continue
        row.status = "SUCCESS"
        reference = item["reference_summary"]
        main_value = outcome.summary.get(main) if main else None
        if isinstance(main_value, str):
            row.rouge_main = rouge(main_value, reference)
        row.rouge_all = rouge("\n".join(_strings(outcome.summary)), reference)
    run.seconds = round(time.monotonic() - started, 3)
    return report


# --- writing reports -----------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _md_escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _latency_row(seconds: Sequence[float]) -> str:
    if not seconds:
        return "| latency per item (s) | – |"
    return (
        f"| latency per item (s) | mean {statistics.fmean(seconds):.2f}, "
        f"median {statistics.median(seconds):.2f}, max {max(seconds):.2f} |"
    )


def _enhance_markdown(report: EnhanceReport, chart: str | None) -> list[str]:
    done = report.completed
    n, ok = len(report.items), len(done)
    punct = report.punctuation()
    chunks = sum(i.chunks for i in report.items)
    degraded = sum(i.degraded_chunks for i in report.items)
    failed_chunks = sum(i.failed_chunks for i in report.items)
    lines = [
        "## Aggregate",
        "",
        "Scores over the completed items, summed over their words (micro average).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| items | {n} |",
        f"| items completed | {ok} |",
        f"| items failed | {n - ok} |",
    ]
    for key in ("overall", *MARKS):
        prf = punct[key]
        name = "punctuation F1 overall" if key == "overall" else f"punctuation F1 {key!r}"
        lines.append(
            f"| {name} | {_fmt(prf.f1 if ok else None)} "
            f"(P {_fmt(prf.precision if ok else None)}, R {_fmt(prf.recall if ok else None)}, "
            f"support {prf.support}) |"
        )
    lines += [
        f"| casing accuracy | {_fmt(_sum_pairs([i.casing for i in done]))} |",
        f"| punctuation F1 overall of the raw input (baseline) "
        f"| {_fmt(report.punctuation(raw=True)['overall'].f1 if ok else None)} |",
        f"| casing accuracy of the raw input (baseline) | {_fmt(_sum_pairs([i.raw_casing for i in done]))} |",
        f"| words preserved | {_fmt(_sum_pairs([i.preserved for i in done]))} |",
        f"| degraded chunk rate | {_fmt(degraded / chunks if chunks else None)} ({degraded} of {chunks}) |",
        f"| failed chunk rate | {_fmt(failed_chunks / chunks if chunks else None)} "
        f"({failed_chunks} of {chunks}) |",
        _latency_row([i.seconds for i in done]),
        f"| tokens (prompt / completion) | {sum(i.prompt_tokens for i in report.items)} / "
        f"{sum(i.completion_tokens for i in report.items)} |",
        "",
        "## Items",
        "",
        "| id | words | status | punct F1 | '.' F1 | ',' F1 | '?' F1 | casing | preserved "
        "| chunks | degraded | seconds |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in report.items:
        f1: dict[str, float] = {k: v.f1 for k, v in (i.punctuation or {}).items()}
        overall = sum((i.punctuation or {}).values(), PRF()).f1 if i.punctuation else None
        lines.append(
            f"| {_md_escape(i.id)} | {i.n_words} | {i.status} | {_fmt(overall)} | {_fmt(f1.get('.'))} "
            f"| {_fmt(f1.get(','))} | {_fmt(f1.get('?'))} | {_fmt(i.casing_accuracy)} "
            f"| {_fmt(i.words_preserved)} | {i.chunks} | {i.degraded_chunks} | {i.seconds:.2f} |"
        )
    lines += _failures(report.items)
    if chart:
        lines += ["", f"![per-item scores]({chart})"]
    return lines


def _rouge_mean(items: Sequence[SummaryItem], attr: str, key: str, total: int | None = None) -> float | None:
    values = [getattr(i, attr)[key] for i in items if getattr(i, attr) is not None]
    if total is not None:  # every item counts; an item without a score scores 0
        return sum(values) / total if total else None
    return _mean(values)


def _summary_markdown(report: SummaryReport, chart: str | None) -> list[str]:
    done = report.completed
    n, ok = len(report.items), len(done)
    valid = sum(i.schema_valid for i in report.items)
    main = done[0].main_field if done else (report.items[0].main_field if report.items else None)
    lines = [
        "## Aggregate",
        "",
        f"ROUGE F1 against `reference_summary`: of the main field (`{main or 'none'}`) and of every "
        "string of the summary joined; means over the completed items, and over all items with a "
        "failed item scoring 0.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| items | {n} |",
        f"| items completed | {ok} |",
        f"| items failed | {n - ok} |",
        f"| schema-valid rate | {_fmt(valid / n if n else None)} ({valid} of {n}) |",
    ]
    for key, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
        lines.append(
            f"| {name} F1 main field | {_fmt(_rouge_mean(done, 'rouge_main', key))} "
            f"(all items: {_fmt(_rouge_mean(report.items, 'rouge_main', key, n))}) |"
        )
    for key, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
        lines.append(
            f"| {name} F1 all strings | {_fmt(_rouge_mean(done, 'rouge_all', key))} "
            f"(all items: {_fmt(_rouge_mean(report.items, 'rouge_all', key, n))}) |"
        )
    prompt = [i.prompt_tokens for i in report.items]
    completion = [i.completion_tokens for i in report.items]
    lines += [
        _latency_row([i.seconds for i in done]),
        f"| tokens (prompt / completion) | {sum(prompt)} / {sum(completion)} |",
        f"| tokens per item (prompt / completion) | {_fmt(_mean(prompt), 0)} / "
        f"{_fmt(_mean(completion), 0)} |",
        "",
        "## Items",
        "",
        "| id | words | status | schema-valid | R-1 | R-2 | R-L | R-1 all | R-2 all | R-L all "
        "| prompt tok | completion tok | seconds |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in report.items:
        m, a = i.rouge_main or {}, i.rouge_all or {}
        lines.append(
            f"| {_md_escape(i.id)} | {i.n_words} | {i.status} | {'yes' if i.schema_valid else 'no'} "
            f"| {_fmt(m.get('rouge1'))} | {_fmt(m.get('rouge2'))} | {_fmt(m.get('rougeL'))} "
            f"| {_fmt(a.get('rouge1'))} | {_fmt(a.get('rouge2'))} | {_fmt(a.get('rougeL'))} "
            f"| {i.prompt_tokens} | {i.completion_tokens} | {i.seconds:.2f} |"
        )
    lines += _failures(report.items)
    if chart:
        lines += ["", f"![per-item scores]({chart})"]
    return lines


def _failures(items: Sequence[EnhanceItem | SummaryItem]) -> list[str]:
    failed = [i for i in items if not i.ok]
    if not failed:
        return []
    lines = ["", "## Failures", ""]
    lines += [f"- `{i.id}` {i.status}: {_md_escape(i.error or 'unknown')}" for i in failed]
    return lines


def _chart(report: Report, path: Path) -> str | None:
    """Draw a bar chart of per-item scores; None when drawn, else why not."""
    if not report.items:
        return "no items"
    try:
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


def write_report(report: Report, out_dir: Path) -> Path:
    """Write `<kind>-<data>-<time>.md`, a `.png` chart and a `.json` of all figures; returns the .md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report.run.started_at).strftime("%Y%m%d-%H%M%S")
    stem = f"{report.kind}-{Path(report.run.source).stem}-{stamp}"
    md, png, js = out_dir / f"{stem}.md", out_dir / f"{stem}.png", out_dir / f"{stem}.json"
    not_drawn = _chart(report, png)
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
    body = _enhance_markdown if isinstance(report, EnhanceReport) else _summary_markdown
    lines += body(report, None if not_drawn else png.name)  # type: ignore[arg-type]
    if not_drawn:
        lines += ["", f"(No chart: {not_drawn}.)"]
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    js.write_text(json.dumps(_report_json(report), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return md


# --- command line --------------------------------------------------------------------------------

eval_app = typer.Typer(
    help="Run evaluation data (JSONL) through the pipeline and write a scored report.",
    no_args_is_help=True,
)
_out = Console()
_err = Console(stderr=True, highlight=False, soft_wrap=True)

_OutOption = Annotated[Path, typer.Option("--out", help="Directory for the report files.")]
_LimitOption = Annotated[int | None, typer.Option("--limit", help="Only the first N items.")]
_IdOption = Annotated[list[str] | None, typer.Option("--id", help="Only the item with this id (repeatable).")]
_TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for each item.")]


def _fail(exc: Exception | str, code: int) -> NoReturn:
    _err.print(f"maie: error: {' '.join(str(exc).split())}", markup=False)
    raise typer.Exit(code)


def _finish(report: Report, out_dir: Path) -> None:
    path = write_report(report, out_dir)
    table = Table("id", "status", "detail")
    for item in report.items:
        if isinstance(item, EnhanceItem):
            detail = (
                f"punct F1 {_fmt(sum((item.punctuation or {}).values(), PRF()).f1)}, "
                f"casing {_fmt(item.casing_accuracy)}, preserved {_fmt(item.words_preserved)}"
                if item.ok
                else item.error or ""
            )
        else:
            r = item.rouge_main or item.rouge_all or {}
            detail = (
                f"ROUGE-1/2/L {_fmt(r.get('rouge1'))} / {_fmt(r.get('rouge2'))} / {_fmt(r.get('rougeL'))}"
                if item.ok
                else item.error or ""
            )
        table.add_row(item.id, item.status, detail)
    _out.print(table)
    _out.print(f"report: {path}", markup=False, highlight=False)
    failed = sum(not i.ok for i in report.items)
    if failed:
        _err.print(f"maie: {failed} of {len(report.items)} items failed", markup=False)
        raise typer.Exit(1)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(exc, 2)


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
        report = eval_enhance(file, _settings(), timeout, limit=limit, ids=item_id, console=_err)
    except MaieError as exc:
        _fail(exc, 2 if isinstance(exc, InputError | ConfigError) else 1)
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
            _settings(),
            timeout,
            enhance_first=not summary_only,
            limit=limit,
            ids=item_id,
            console=_err,
        )
    except MaieError as exc:
        _fail(exc, 2 if isinstance(exc, InputError | ConfigError) else 1)
    _finish(report, out)
