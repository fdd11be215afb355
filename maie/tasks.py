"""The tasks: thin wrappers that unpack ids, call the plain LLM functions and return JSON data.

    enhance_chunk  (queue enhance)  one chunk → its enhanced text, stored under (job, chunk)
    summarize      (queue summary)  chord body: the chunks in order → schema-valid summary → result
    assemble       (queue summary)  chord body of enhance-only jobs: the chunks in order → result

Retryable errors (`BackendUnavailable`) retry with capped exponential backoff and full jitter
until the task's retry deadline (`TASK_RETRY_DEADLINE_SECONDS`), behind one cooldown per endpoint
(maie.cooldown); every other error fails at once. Whatever fails is recorded against the job with
its stage, code and chunk, so `Job.wait()` can say which stage failed and why. Every task start and
LLM call marks its job's progress, which the reconciler (maie.reconcile) watches.
"""

from __future__ import annotations

import logging
import math
import random
import time
from functools import lru_cache
from typing import Any

from celery import Task as CeleryTask
from celery.utils.time import get_exponential_backoff_interval

from maie import metrics
from maie.backends import LLMBackend, get_backend
from maie.canvas import notes_canvas
from maie.celery import RESULT_EXPIRES, TASK_ROUTES, app, startup_settings, visibility_timeout
from maie.cooldown import PROBE_WAIT_SECONDS, Cooldown, EndpointCoolingDown, EndpointDown, GuardedBackend
from maie.enhance import SYSTEM_PROMPT as ENHANCE_PROMPT
from maie.enhance import enhance_chunk_text
from maie.errors import (
    BackendUnavailable,
    ConfigError,
    ContextExceeded,
    InputError,
    JobCancelled,
    JobFailed,
    MaieError,
    WorkerLost,
)
from maie.result import JobError, JobResult, StageMetrics, build_result, version_of
from maie.settings import Settings, Task
from maie.store import JobStore
from maie.summary import fits_in_one_call, partial_notes, plan_groups, summarize_text
from maie.templates import load_template

__all__ = ["enhance_chunk", "summarize", "partial_notes_task", "assemble"]

log = logging.getLogger("maie.tasks")


def settings() -> Settings:
    return startup_settings


@lru_cache(maxsize=1)
def store() -> JobStore:
    return JobStore(settings().celery_result_backend, RESULT_EXPIRES, patient=True)


class MaieTask(CeleryTask):  # type: ignore[type-arg]
    """Records a task's final failure against its job before Celery stores the exception."""

    stage = "job"
    # Retries are bounded in time by _retry_or_raise, not by Celery's count.
    max_retries = None

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        # Whole seconds: on RabbitMQ, Celery sends a countdown through native delayed delivery,
        # which takes whole seconds and rejects one under a second (`int(0.4)` is 0) with a
        # ValueError; a jittered backoff of 0.4 s would fail the task instead of retrying it.
        if kwargs.get("countdown"):
            kwargs["countdown"] = math.ceil(kwargs["countdown"])
        return super().retry(*args, **kwargs)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = (kwargs or {}).get("job_id")
        if job_id:
            error = JobError(
                stage=self.stage,
                code=getattr(exc, "code", type(exc).__name__),
                message=str(exc),
                chunk=(kwargs or {}).get("index"),
            )
            # "at": when the job ended, for clients that show it (JobError itself ignores it).
            store().put_error(job_id, {**error.model_dump(), "at": time.time()})
        log.error("%s failed: %s", self.name, exc)
        super().on_failure(exc, task_id, args, kwargs, einfo)  # type: ignore[arg-type]


def _retry_or_raise(task: MaieTask, exc: BackendUnavailable, what: str) -> MaieError:
    """Schedule a retry while the task's retry deadline allows; else return the error to raise.

    The budget is in time (`TASK_RETRY_DEADLINE_SECONDS` from the task's first failure), with capped
    exponential backoff and full jitter between calls. A task that found its endpoint cooling down
    made no call: it comes back when the cooldown ends, and that wait counts against the deadline
    but not against `TASK_MAX_RETRIES`.
    """
    s = settings()
    job_id = str((task.request.kwargs or {}).get("job_id", ""))
    if job_id:
        _check_cancelled(job_id)  # a call that ended after the job was cancelled is not retried
    st = store()
    now = time.time()
    if isinstance(exc, EndpointCoolingDown):
        since, failures = st.retry_since(job_id, what), None
    else:
        since, failures = st.note_retry(job_id, what)
    spent = now - since
    left = s.task_retry_deadline_seconds - spent
    too_many = failures is not None and s.task_max_retries is not None and failures > s.task_max_retries
    if left <= 0 or too_many:
        bound = (
            f"TASK_MAX_RETRIES={s.task_max_retries}"
            if too_many
            else f"TASK_RETRY_DEADLINE_SECONDS={s.task_retry_deadline_seconds}"
        )
        down = _endpoint_down(task)
        where = f"; {down.describe(now)}" if down is not None else ""
        return BackendUnavailable(f"{exc} (gave up after {spent:.0f} s of retries, {bound}{where})")
    # A countdown is held by the worker unacknowledged: it must end well within the visibility
    # timeout, or Redis would deliver the task a second time.
    cap = min(float(s.task_retry_backoff_max), visibility_timeout(s) / 2, max(left, 0.0))
    if isinstance(exc, EndpointCoolingDown):
        countdown = min(cap, exc.retry_after + random.uniform(0, min(cap, PROBE_WAIT_SECONDS)))
        log.info("%s: %s; waiting %.1f s", what, exc, countdown)
    else:
        countdown = min(
            cap,
            get_exponential_backoff_interval(
                factor=1, retries=(failures or 1) - 1, maximum=int(cap) or 1, full_jitter=True
            ),
        )
        log.warning("%s: %s; retry %d in %ss", what, exc, failures, round(countdown, 1))
    if job_id:
        st.touch(job_id, now + countdown)
    raise task.retry(exc=exc, countdown=countdown)


def _endpoint_down(task: MaieTask) -> EndpointDown | None:
    """What is known about the endpoint of the task's stage, if it is marked down."""
    s = settings()
    if s.llm_backend != "vllm_server":
        return None
    return _cooldown(s.endpoint("enhance" if task.stage == "enhance" else "summary").base_url).state()


def _cooldown(url: str) -> Cooldown:
    s = settings()
    return Cooldown(
        store().redis,
        url,
        cap_seconds=min(s.task_retry_backoff_max, visibility_timeout(s) / 2),
        probe_ttl=s.llm_server.request_timeout_seconds,
    )


def _backend(task: Task, job_id: str) -> LLMBackend:
    """This process's backend for `task`, behind its endpoint's cooldown, reporting progress."""
    s = settings()
    inner = get_backend(task, s)
    cooldown = _cooldown(inner.endpoint) if inner.kind == "vllm_server" else None
    return GuardedBackend(inner, cooldown, lambda: store().touch(job_id))


def _check_cancelled(job_id: str) -> None:
    if store().cancelled(job_id):
        raise JobCancelled(f"job {job_id} was cancelled")


# A task whose worker dies (killed, out of memory) is delivered again after the visibility timeout.
# One that kills every worker it reaches would loop forever: each attempt (a retry is a new
# attempt) may be delivered this many times, then the job fails naming the task.
MAX_DELIVERIES = 3


def _started(task: MaieTask, job_id: str, what: str, redispatch: int = 0) -> None:
    """Count this delivery of the task's attempt, and note the job's progress for the reconciler."""
    # A task sent again by the reconciler counts its deliveries apart from the lost original's.
    sent = f"{what}:r{redispatch}" if redispatch else what
    attempt = f"{sent}:{task.request.retries}"
    st = store()
    n = st.count_delivery(job_id, attempt)
    if n > MAX_DELIVERIES:
        raise WorkerLost(
            f"{what}: its worker stopped while running it {n - 1} times (killed or out of memory?); "
            "not trying again"
        )
    if n > 1:
        log.warning(
            "%s: delivered again (%d of %d): its worker stopped, or it outlasted the visibility timeout",
            what,
            n,
            MAX_DELIVERIES,
        )
    st.touch(job_id)
    created = st.created_at(job_id)
    queue = TASK_ROUTES.get(task.name, {}).get("queue")
    if created is not None and queue is not None:
        st.note_head(queue, created)


def _already_done(job_id: str) -> dict[str, Any] | None:
    """The receipt of a job whose result is stored: a late duplicate of its final task (a
    message thought lost and sent again by the reconciler) does nothing."""
    raw = store().result(job_id)
    if raw is None:
        return None
    log.info("job already has its result: nothing to do")
    return _receipt(JobResult.model_validate_json(raw))


# No result stored for a chunk task that succeeds: nothing reads it (its record is in the job
# store, Flower shows the task from its events, and the Redis chord counter takes the return value
# directly), and storing it cost two round trips per chunk (STARTED, then SUCCESS). Failures and
# revocations are still stored.
@app.task(
    bind=True,
    base=MaieTask,
    name="maie.enhance_chunk",
    stage="enhance",
    ignore_result=True,
    store_errors_even_if_ignored=True,
)
def enhance_chunk(self: MaieTask, *, job_id: str, index: int, redispatch: int = 0) -> dict[str, Any]:
    _check_cancelled(job_id)
    done = store().enhanced_one(job_id, index)
    if done is not None:
        # Delivered again after it finished: its acknowledgement was lost with a broker connection
        # (a Redis restart). Nothing to do, and no delivery counted against a worker that did not
        # die: three restarts in a row would otherwise fail the job with worker_lost.
        log.info("chunk %d: already enhanced; delivered again after a lost acknowledgement", index)
        return {k: done.get(k) for k in ("index", "degraded", "failed", "edit_rate")}
    _started(self, job_id, f"chunk {index}", redispatch)
    text = store().raw_chunk(job_id, index)
    if text is None:
        raise InputError(f"chunk {index} of job {job_id} is not in the store (expired?)")
    s = settings()
    started = time.time()
    backend = _backend("enhance", job_id)
    try:
        chunk = enhance_chunk_text(
            backend, index, text, s.llm_enhance, s.enhance_max_edit_rate, s.enhance_mode
        )
        record = chunk.to_json()
    except MaieError as exc:
        if isinstance(exc, BackendUnavailable):
            exc = _retry_or_raise(self, exc, f"chunk {index}")
        message = f"chunk {index}: {exc}"
        # A wrong key or model name is the operator's to fix: never a "successful" job.
        if s.enhance_on_failure == "fail" or isinstance(exc, ConfigError):
            raise type(exc)(message) from None
        # ENHANCE_ON_FAILURE=raw: the summary goes on with this chunk's raw text, marked failed.
        log.error("%s; keeping its raw text (ENHANCE_ON_FAILURE=raw)", message)
        record = {
            "index": index,
            "text": text,
            "degraded": True,
            "edit_rate": None,
            "failed": True,
            "error": message,
            "attempts": self.request.retries + 1,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "seconds": 0.0,
        }
    # What produced the text travels with it: one write per chunk, not a second one to the job.
    record.update(started_at=started, finished_at=time.time())
    if not record.get("failed"):  # a chunk kept raw never learnt which model would have served it
        record["version"] = version_of(backend, prompt=ENHANCE_PROMPT, decoding=s.enhance_mode).model_dump()
    store().put_enhanced(job_id, index, record)
    _record_chunk(backend, record)
    log.info("chunk %d enhanced: degraded=%s edit_rate=%s", index, record["degraded"], record["edit_rate"])
    return {k: record[k] for k in ("index", "degraded", "failed", "edit_rate")}


def _record_chunk(backend: Any, record: dict[str, Any]) -> None:
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
    url = settings().celery_result_backend
    metrics.record_chunk(url, degraded=bool(record["degraded"]), failed=failed, llm=llm)


# Levels of notes a summary may take before MAIE gives up. Each level at least halves the number of
# parts (summary.notes_budget), so 20 cover any transcript under the input size limit even with a
# 1k-token context; the bound only guards against a plan that stops shrinking.
MAX_SUMMARY_LEVELS = 20
# After the server refused a request MAIE's count said would fit, plans use this much less context.
CONTEXT_BACKOFF = 0.75


@app.task(bind=True, base=MaieTask, name="maie.summarize", stage="summary")
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
    _check_cancelled(job_id)
    if (done := _already_done(job_id)) is not None:
        return done
    _started(self, job_id, f"summary of level {level}" if level else "summary", redispatch)
    s = settings()
    st = store()
    meta = st.meta(job_id)
    template = load_template(meta["template_id"], s.templates_dir)
    result = build_result(st, job_id, meta)  # checks every chunk is there, in order
    backend = _backend("summary", job_id)
    texts = _level_texts(st, job_id, meta, level)
    text = ("\n\n" if level else "\n").join(texts)
    scale = float(meta.get("context_scale", 1.0))
    try:  # token counts and planning reach the endpoint too: all of it is retried alike
        if not fits_in_one_call(backend, template, text, s.llm_sum, scale):
            _next_level(self, st, job_id, meta, texts, level, scale, template.language)
        try:
            outcome = summarize_text(backend, template, text, s.llm_sum)
        except ContextExceeded as exc:
            # The server counted more tokens than MAIE did: plan again with less of the context.
            log.warning("summary of level %d refused as too long (%s): less context", level, exc)
            scale *= CONTEXT_BACKOFF
            st.set_meta(job_id, context_scale=scale)
            _next_level(self, st, job_id, meta, texts, level, scale, template.language)
    except BackendUnavailable as exc:
        raise _retry_or_raise(self, exc, "summary") from None
    result.summary = outcome.data
    result.versions["summary"] = version_of(
        backend, prompt=template.prompt_source, schema_sha256=template.schema_sha256
    )
    partial_stats = list(st.partials(job_id).values()) if level else []
    result.metrics["summary"] = StageMetrics(
        wall_seconds=round(outcome.seconds + sum(p["seconds"] for p in partial_stats), 4),
        prompt_tokens=outcome.prompt_tokens + sum(p["prompt_tokens"] for p in partial_stats),
        completion_tokens=outcome.completion_tokens + sum(p["completion_tokens"] for p in partial_stats),
        chunks=meta["n_chunks"],
    )
    result.finished_at = time.time()
    st.put_result(job_id, result.model_dump_json())
    url = s.celery_result_backend
    tokens = (outcome.prompt_tokens, outcome.completion_tokens)
    metrics.record_llm(url, "summary", backend.endpoint, backend.model, *tokens, outcome.seconds)
    metrics.record_job(url, result.status, result.finished_at - (result.submitted_at or result.finished_at))
    log.info("summary done: template=%s attempts=%d levels=%d", template.id, outcome.attempts, level + 1)
    return _receipt(result)


def _next_level(
    task: MaieTask,
    st: JobStore,
    job_id: str,
    meta: dict[str, Any],
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


def _level_texts(st: JobStore, job_id: str, meta: dict[str, Any], level: int) -> list[str]:
    """What level `level` summarises: the chunk texts (0), or the notes of that level in order."""
    if level == 0:
        return _chunk_texts(st, job_id, meta)
    notes = st.partials(job_id, level)
    if not notes or sorted(notes) != list(range(len(notes))):
        raise JobFailed(f"notes of level {level} missing: have groups {sorted(notes)}")
    return [notes[g]["text"] for g in range(len(notes))]


def _receipt(result: JobResult) -> dict[str, Any]:
    """What the last task returns to Celery (and Flower shows): ids and counts, never the text.
    The result itself is in the job store, read by `Job.result()`."""
    return {
        "job_id": result.job_id,
        "status": result.status,
        "chunks": len(result.chunks),
        "degraded": [c.index for c in result.chunks if c.degraded],
    }


def _chunk_texts(st: JobStore, job_id: str, meta: dict[str, Any]) -> list[str]:
    """The texts to summarise, chunk by chunk: enhanced when the job enhanced them, else raw."""
    n = int(meta["n_chunks"])
    if "enhance" in meta["features"]:
        records = st.enhanced(job_id)
        return [records[i]["text"] for i in range(n)]
    raw = st.raw_chunks(job_id)
    return [raw[i] for i in range(n)]


@app.task(bind=True, base=MaieTask, name="maie.partial_notes", stage="summary")
def partial_notes_task(
    self: MaieTask, *, job_id: str, group: int, start: int, end: int, level: int = 1
) -> dict[str, Any]:
    """Notes of parts [start, end) of the level below (chunks for level 1), stored under
    (job, level, group)."""
    _check_cancelled(job_id)
    _started(self, job_id, f"notes {level}-{group}")
    s = settings()
    st = store()
    meta = st.meta(job_id)
    template = load_template(meta["template_id"], s.templates_dir)
    texts = _level_texts(st, job_id, meta, level - 1)
    backend = _backend("summary", job_id)
    started = time.monotonic()
    try:
        scale = float(meta.get("context_scale", 1.0))
        reply = partial_notes(backend, texts[start:end], template.language, s.llm_sum, scale)
    except BackendUnavailable as exc:
        raise _retry_or_raise(self, exc, f"notes of level {level} parts {start}-{end - 1}") from None
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


@app.task(bind=True, base=MaieTask, name="maie.assemble", stage="enhance")
def assemble(self: MaieTask, _header: Any = None, *, job_id: str, redispatch: int = 0) -> dict[str, Any]:
    _check_cancelled(job_id)
    if (done := _already_done(job_id)) is not None:
        return done
    _started(self, job_id, "assemble", redispatch)
    st = store()
    result = build_result(st, job_id, st.meta(job_id))
    result.finished_at = time.time()
    st.put_result(job_id, result.model_dump_json())
    seconds = result.finished_at - (result.submitted_at or result.finished_at)
    metrics.record_job(settings().celery_result_backend, result.status, seconds)
    log.info("enhanced transcript assembled: %d chunks", len(result.chunks))
    return _receipt(result)
