"""The tasks: thin wrappers that unpack ids, call the plain LLM functions and return JSON data.

    enhance_chunk  (queue enhance)  one chunk → its enhanced text, stored under (job, chunk)
    summarize      (queue summary)  chord body: the chunks in order → schema-valid summary → result
    assemble       (queue summary)  chord body of enhance-only jobs: the chunks in order → result

    partial_notes  (queue summary)  notes on a group of parts of a transcript too long for one call

Retries, failure records and progress are the base class's (maie.task_base.MaieTask).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from maie import metrics
from maie.backends import get_backend
from maie.canvas import notes_canvas
from maie.celery import app
from maie.enhance import SYSTEM_PROMPT as ENHANCE_PROMPT
from maie.enhance import EnhancedChunk, enhance_chunk_text
from maie.errors import (
    BackendUnavailable,
    ConfigError,
    ContextExceeded,
    InputError,
    JobFailed,
    MaieError,
)
from maie.job_meta import JobMeta
from maie.names import ASSEMBLE, ENHANCE_CHUNK, PARTIAL_NOTES, SUMMARIZE
from maie.result import JobResult, StageMetrics, build_result, version_of
from maie.store import JobStore
from maie.summary import fits_in_one_call, partial_notes, plan_groups, summarize_text
from maie.task_base import MaieTask, cancelled_error, check_cancelled, llm_backend, receipt, settings, store
from maie.templates import load_template

__all__ = ["enhance_chunk", "summarize", "partial_notes_task", "assemble"]

log = logging.getLogger("maie.tasks")


def _already_done(job_id: str) -> dict[str, Any] | None:
    """The receipt of a job whose result is stored: a late duplicate of its final task (a
    message thought lost and sent again by the reconciler) does nothing."""
    raw = store().result(job_id)
    if raw is None:
        return None
    log.info("job already has its result: nothing to do")
    return receipt(JobResult.model_validate_json(raw))


def _result_so_far(st: JobStore, job_id: str, meta: JobMeta) -> JobResult:
    """The result from the job's records (checks every chunk is there, in order)."""
    enhanced = st.enhanced(job_id) if "enhance" in meta.features else {}
    raw = st.raw_transcript(job_id) if meta.input == "audio" else None
    return build_result(job_id, meta, enhanced, raw)


# No result stored for a chunk task that succeeds: nothing reads it (its record is in the job
# store, Flower shows the task from its events, and the Redis chord counter takes the return value
# directly), and storing it cost two round trips per chunk (STARTED, then SUCCESS). Failures and
# revocations are still stored.
@app.task(
    bind=True,
    base=MaieTask,
    name=ENHANCE_CHUNK,
    stage="enhance",
    what="chunk {index}",
    ignore_result=True,
    store_errors_even_if_ignored=True,
)
def enhance_chunk(self: MaieTask, *, job_id: str, index: int, redispatch: int = 0) -> dict[str, Any]:
    # What the task reads and marks as it starts, in one round trip (maie.store.JobStore.open_chunk).
    opening = store().open_chunk(job_id, index, self.attempt(redispatch), self.source_queue())
    if opening.cancelled:
        raise cancelled_error(job_id)
    if opening.done is not None:
        # Delivered again after it finished: its acknowledgement was lost with a broker connection
        # (a Redis restart). Nothing to do, and no delivery counted against a worker that did not
        # die: three restarts in a row would otherwise fail the job with worker_lost.
        log.info("chunk %d: already enhanced; delivered again after a lost acknowledgement", index)
        return {k: opening.done.get(k) for k in ("index", "degraded", "failed", "edit_rate")}
    self.check_deliveries(opening.deliveries)
    text = opening.raw
    if text is None:
        raise InputError(f"chunk {index} of job {job_id} is not in the store (expired?)")
    s = settings()
    started = time.time()
    # No progress mark around the call: the opening marked it, the chunk's record marks it again.
    backend = llm_backend("enhance", job_id, touch=False)
    try:
        chunk = enhance_chunk_text(
            backend, index, text, s.llm_enhance, s.enhance_max_edit_rate, s.enhance_mode
        )
    except MaieError as exc:
        if isinstance(exc, BackendUnavailable):
            exc = self.retry_or_give_up(exc)  # retries, or the error that ends the retries
        message = f"chunk {index}: {exc}"
        # A wrong key or model name is the operator's to fix: never a "successful" job.
        if s.enhance_on_failure == "fail" or isinstance(exc, ConfigError):
            raise type(exc)(message) from None
        # ENHANCE_ON_FAILURE=raw: the summary goes on with this chunk's raw text, marked failed.
        log.error("%s; keeping its raw text (ENHANCE_ON_FAILURE=raw)", message)
        chunk = EnhancedChunk.kept_raw(index, text, message, attempts=self.request.retries + 1)
    record = chunk.to_json()
    # What produced the text travels with it: one write per chunk, not a second one to the job.
    record.update(started_at=started, finished_at=time.time())
    if not record.get("failed"):  # a chunk kept raw never learnt which model would have served it
        record["version"] = version_of(backend, prompt=ENHANCE_PROMPT, decoding=s.enhance_mode).model_dump()
    # The record, the job's progress and the metrics in one round trip.
    store().finish_chunk(job_id, index, record, also=_chunk_metrics(backend, record))
    log.info("chunk %d enhanced: degraded=%s edit_rate=%s", index, record["degraded"], record["edit_rate"])
    return {k: record[k] for k in ("index", "degraded", "failed", "edit_rate")}


def _chunk_metrics(backend: Any, record: dict[str, Any]) -> Callable[[Any], None]:
    failed = bool(record.get("failed"))
    llm = (
        None
        if failed
        else (
            "enhance",
            backend.endpoint,
            backend.model,
            int(record.get("prompt_tokens") or 0),
            int(record.get("completion_tokens") or 0),
            float(record.get("seconds") or 0.0),
        )
    )
    return lambda pipe: metrics.add_chunk(pipe, degraded=bool(record["degraded"]), failed=failed, llm=llm)


# Levels of notes a summary may take before MAIE gives up. Each level at least halves the number of
# parts (summary.notes_budget), so 20 cover any transcript under the input size limit even with a
# 1k-token context; the bound only guards against a plan that stops shrinking.
MAX_SUMMARY_LEVELS = 20
# After the server refused a request MAIE's count said would fit, plans use this much less context.
CONTEXT_BACKOFF = 0.75


@app.task(bind=True, base=MaieTask, name=SUMMARIZE, stage="summary", what="summary of level {level}")
def summarize(
    self: MaieTask,
    _header: Any = None,
    *,
    job_id: str,
    level: int = 0,
    from_partials: bool = False,
    redispatch: int = 0,
) -> dict[str, Any]:
    """Chord body: the summary of the job's text (level 0), or of the notes of `level`.

    When the text does not fit the summary model's context in one call, the task replaces itself
    with one more level of notes (a canvas step, visible in Flower) and runs again on those."""
    level = max(level, 1 if from_partials else 0)  # from_partials: messages queued by earlier releases
    check_cancelled(job_id)
    if (done := _already_done(job_id)) is not None:
        return done
    self.started(job_id, redispatch)
    s = settings()
    st = store()
    meta = st.meta(job_id)
    template = load_template(meta.template_id or s.default_template, s.templates_dir)
    result = _result_so_far(st, job_id, meta)
    backend = llm_backend("summary", job_id)
    texts = _level_texts(st, job_id, meta, level)
    text = ("\n\n" if level else "\n").join(texts)
    scale = meta.context_scale
    # Token counts and planning reach the endpoint too: an unreachable one is retried alike.
    if not fits_in_one_call(backend, template, text, s.llm_sum, scale):
        _next_level(self, st, job_id, texts, level, scale, template.language)
    try:
        outcome = summarize_text(backend, template, text, s.llm_sum)
    except ContextExceeded as exc:
        # The server counted more tokens than MAIE did: plan again with less of the context.
        log.warning("summary of level %d refused as too long (%s): less context", level, exc)
        scale *= CONTEXT_BACKOFF
        st.set_meta(job_id, context_scale=scale)
        _next_level(self, st, job_id, texts, level, scale, template.language)
    result.summary = outcome.data
    result.versions["summary"] = version_of(
        backend, prompt=template.prompt_source, schema_sha256=template.schema_sha256
    )
    partial_stats = list(st.partials(job_id).values()) if level else []
    result.metrics["summary"] = StageMetrics(
        wall_seconds=round(outcome.seconds + sum(p["seconds"] for p in partial_stats), 4),
        prompt_tokens=outcome.prompt_tokens + sum(p["prompt_tokens"] for p in partial_stats),
        completion_tokens=outcome.completion_tokens + sum(p["completion_tokens"] for p in partial_stats),
        chunks=meta.n_chunks,
    )
    result.finished_at = time.time()
    st.put_result(job_id, result.model_dump_json())
    url = s.celery_result_backend
    tokens = (outcome.prompt_tokens, outcome.completion_tokens)
    metrics.record_llm(url, "summary", backend.endpoint, backend.model, *tokens, outcome.seconds)
    metrics.record_job(url, result.status, result.finished_at - (result.submitted_at or result.finished_at))
    log.info("summary done: template=%s attempts=%d levels=%d", template.id, outcome.attempts, level + 1)
    return receipt(result)


def _next_level(
    task: MaieTask,
    st: JobStore,
    job_id: str,
    texts: list[str],
    level: int,
    scale: float,
    language: str,
) -> None:
    """Replace the summary task with notes on groups of `texts`, then the summary of those notes."""
    s = settings()
    backend = get_backend("summary", s)
    groups = plan_groups(texts, backend, s.llm_sum, language, scale)
    if level + 1 > MAX_SUMMARY_LEVELS or (level and len(groups) >= len(texts)):
        raise JobFailed(
            f"the notes of level {level} ({len(texts)} parts) still do not fit the summary model's "
            f"context of {backend.max_model_len} tokens; raise LLM_SUM__MAX_MODEL_LEN on the summary "
            "server or lower LLM_SUM__MAX_TOKENS"
        )
    log.info(
        "level %d text exceeds the summary context (%d tokens): notes on %d groups",
        level,
        backend.max_model_len,
        len(groups),
    )
    st.set_meta(job_id, summary_levels=level + 1)
    raise task.replace(notes_canvas(task.app, job_id, level + 1, groups))


def _level_texts(st: JobStore, job_id: str, meta: JobMeta, level: int) -> list[str]:
    """What level `level` summarises: the chunk texts (0), or the notes of that level in order."""
    if level == 0:
        return _chunk_texts(st, job_id, meta)
    notes = st.partials(job_id, level)
    if not notes or sorted(notes) != list(range(len(notes))):
        raise JobFailed(f"notes of level {level} missing: have groups {sorted(notes)}")
    return [notes[g]["text"] for g in range(len(notes))]


def _chunk_texts(st: JobStore, job_id: str, meta: JobMeta) -> list[str]:
    """The texts to summarise, chunk by chunk: enhanced when the job enhanced them, else raw."""
    n = meta.n_chunks
    if "enhance" in meta.features:
        records = st.enhanced(job_id)
        return [records[i]["text"] for i in range(n)]
    raw = st.raw_chunks(job_id)
    return [raw[i] for i in range(n)]


@app.task(bind=True, base=MaieTask, name=PARTIAL_NOTES, stage="summary", what="notes {level}-{group}")
def partial_notes_task(
    self: MaieTask, *, job_id: str, group: int, start: int, end: int, level: int = 1
) -> dict[str, Any]:
    """Notes of parts [start, end) of the level below (chunks for level 1), stored under
    (job, level, group)."""
    check_cancelled(job_id)
    self.started(job_id)
    s = settings()
    st = store()
    meta = st.meta(job_id)
    template = load_template(meta.template_id or s.default_template, s.templates_dir)
    texts = _level_texts(st, job_id, meta, level - 1)
    backend = llm_backend("summary", job_id)
    started = time.monotonic()
    reply = partial_notes(backend, texts[start:end], template.language, s.llm_sum, meta.context_scale)
    if reply.finish_reason == "length":
        log.warning("notes of level %d parts %d-%d reached their token budget", level, start, end - 1)
    record = {
        "text": reply.text.strip(),
        "start": start,
        "end": end,
        "truncated": reply.finish_reason == "length",
        "prompt_tokens": reply.prompt_tokens or 0,
        "completion_tokens": reply.completion_tokens or 0,
        "seconds": round(time.monotonic() - started, 4),
    }
    st.put_partial(job_id, level, group, record)
    metrics.record_llm(
        s.celery_result_backend,
        "summary",
        backend.endpoint,
        backend.model,
        reply.prompt_tokens or 0,
        reply.completion_tokens or 0,
        time.monotonic() - started,
    )
    return {"level": level, "group": group, "start": start, "end": end, "truncated": record["truncated"]}


@app.task(bind=True, base=MaieTask, name=ASSEMBLE, stage="enhance", what="assemble")
def assemble(self: MaieTask, _header: Any = None, *, job_id: str, redispatch: int = 0) -> dict[str, Any]:
    check_cancelled(job_id)
    if (done := _already_done(job_id)) is not None:
        return done
    self.started(job_id, redispatch)
    st = store()
    result = _result_so_far(st, job_id, st.meta(job_id))
    result.finished_at = time.time()
    st.put_result(job_id, result.model_dump_json())
    seconds = result.finished_at - (result.submitted_at or result.finished_at)
    metrics.record_job(settings().celery_result_backend, result.status, seconds)
    log.info("enhanced transcript assembled: %d chunks", len(result.chunks))
    return receipt(result)
