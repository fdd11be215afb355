"""Submitting jobs and following them: `submit()` validates, chunks and sends the canvas; `Job` follows.

Everything that can be refused is refused here, before anything is queued: the settings, the
features, the template, the transcript or recording, the queue depth. Then the chunk texts go to
Redis and the canvas goes to the broker, carrying only ids:

    chord(group(enhance_chunk(job, i) for each chunk)  → queue enhance,
          summarize(job) | assemble(job))               → queue summary

A recording (detected from its content, maie/audio.py) goes to Redis as it is and its job starts on
queue asr (maie/asr_tasks.py); recognition ends by sending the same canvas for the text it found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from functools import lru_cache
from typing import Literal

import kombu.exceptions
import redis
from celery import Celery

from maie.audio import AudioInput, read_audio
from maie.audio_store import AudioStore
from maie.backends.kinds import kind_of
from maie.broker import amqp_queue_depths, is_amqp
from maie.canvas import asr_part_task_id, audio_canvas, chunk_task_id, job_canvas
from maie.celery import client_app, job_ttl
from maie.chunking import Chunk, chunk_segments, load_token_counter
from maie.enhance import max_chunk_tokens
from maie.errors import BackendUnavailable, InputError, QueueFull
from maie.inputs import Format, Segment, load_transcript, parse_transcript
from maie.job_meta import JobMeta
from maie.lanes import is_short, pool_of
from maie.names import ALL_QUEUES, QUEUES, TASKS
from maie.result import JobError, JobResult, JobStatus
from maie.settings import Settings, get_settings, mask_url
from maie.store import JobRecords, JobStore, redis_client
from maie.templates import load_template

__all__ = ["FEATURES", "submit", "Job", "check_features", "split_into_chunks"]

# What a job can ask for: the LLM stages, in pipeline order.
FEATURES = TASKS

log = logging.getLogger(__name__)


def _settings(settings: Settings | None) -> Settings:
    """The caller's settings, else the process settings (read now, on first use: ConfigError)."""
    return settings if settings is not None else get_settings()


def _store(settings: Settings) -> JobStore:
    return JobStore(settings.celery_result_backend, job_ttl(settings))


def check_features(features: Iterable[str]) -> list[str]:
    chosen = [f.strip() for f in features if f.strip()]
    unknown = sorted(set(chosen) - set(FEATURES))
    if unknown:
        raise InputError(
            f"unknown feature {', '.join(map(repr, unknown))}; choose from {', '.join(FEATURES)}"
        )
    if not chosen:
        raise InputError(f"no feature chosen; choose from {', '.join(FEATURES)}")
    return [f for f in FEATURES if f in chosen]


def chunk_budget(settings: Settings) -> int:
    """CHUNK_MAX_TOKENS, clamped so a chunk, its prompt and its reply fit the local engine's context.

    Against a server the context is learnt by the enhance pool, which enhances a chunk that does
    not fit in parts (and says so in its log); here only the local engine's context is known."""
    wanted = settings.chunk_max_tokens
    context = kind_of(settings).context_length("enhance", settings)
    if context is None:
        return wanted
    allowed = max_chunk_tokens(context, settings.llm_enhance)
    if allowed < wanted:
        _warn_clamped(wanted, allowed, context)
    return min(wanted, allowed)


@lru_cache(maxsize=8)
def _warn_clamped(wanted: int, allowed: int, context: int) -> None:
    """Once per process and setting: the clamp is a configuration fact, not news for every job."""
    log.warning(
        "CHUNK_MAX_TOKENS=%d clamped to %d: a chunk, its prompt and its reply must fit "
        "LLM_ENHANCE__MAX_MODEL_LEN=%d",
        wanted,
        allowed,
        context,
    )


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in each queue: the length of its list on Redis, its ready messages on
    RabbitMQ; BackendUnavailable when the broker cannot be reached."""
    if not is_amqp(settings.celery_broker_url):
        client = redis_client(settings.celery_broker_url)
        lanes = {queue: int(client.llen(queue)) for queue in ALL_QUEUES}
    else:
        try:
            with client_app(settings).connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
                lanes = amqp_queue_depths(conn, ALL_QUEUES)
        except (kombu.exceptions.OperationalError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach the broker: {' '.join(str(exc).split())}") from None
    depths = dict.fromkeys(QUEUES, 0)
    for name, depth in lanes.items():  # a pool's queue counts its short lane too
        depths[pool_of(name)] += depth
    return depths


def split_into_chunks(segments: list[Segment], settings: Settings) -> list[Chunk]:
    """Segments → chunks under the enhancement model's token budget (also used after recognition)."""
    tokenizer = kind_of(settings).tokenizer("enhance", settings)
    return chunk_segments(segments, chunk_budget(settings), load_token_counter(tokenizer))


def _read_text(data: bytes, filename: str | None, max_bytes: int, fmt: Format | None) -> list[Segment]:
    where = f"upload {filename!r}" if filename else "upload"
    if len(data) > max_bytes:
        raise InputError(f"{where} is {len(data)} bytes, over the limit of {max_bytes} bytes")
    if not data:
        raise InputError(f"{where} is empty (0 bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is neither audio nor UTF-8 text: bad byte at offset {exc.start}") from None
    return parse_transcript(text, max_bytes=max_bytes, fmt=fmt)


def submit(
    source: str | os.PathLike[str] | bytes,
    *,
    filename: str | None = None,
    template_id: str | None = None,
    features: Iterable[str] = FEATURES,
    fmt: Format | None = None,
    idempotency_key: str | None = None,
    labels: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> Job:
    """Validate a transcript or a recording, split it and queue its job; returns its `Job`.

    `source` is transcript text, a path (transcript or audio file) or the bytes of an upload
    (`filename` names it in messages). Audio is told from text by its content.
    `labels` are the caller's own key-value pairs, kept with the job and returned by `Job.labels()`
    (the HTTP API keeps there which outputs its client asked for).
    """
    s = _settings(settings)
    chosen = check_features(features)
    template = (
        load_template(template_id or s.default_template, s.templates_dir) if "summary" in chosen else None
    )
    if template is None and template_id is not None:
        load_template(template_id, s.templates_dir)  # still refuse a bad id
    audio: AudioInput | None = None
    if fmt is None:  # a transcript format forced by the caller means a transcript
        audio = read_audio(
            source, filename=filename, max_bytes=s.asr.max_bytes, max_seconds=s.asr.max_seconds
        )
    chunks: list[Chunk] = []
    if audio is None:
        if isinstance(source, bytes):
            segments = _read_text(source, filename, s.max_input_bytes, fmt)
        else:
            segments = load_transcript(source, max_bytes=s.max_input_bytes, fmt=fmt)
        chunks = split_into_chunks(segments, s)
    store = _store(s)
    try:
        try:
            depths = queue_depths(s)
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"cannot reach the broker at {mask_url(s.celery_broker_url)}: {one_line(exc)}"
            ) from None
        for queue, depth in depths.items():
            if depth >= s.queue_max_depth:
                raise QueueFull(
                    f"queue {queue} holds {depth} tasks (QUEUE_MAX_DEPTH={s.queue_max_depth}); "
                    "submit again later or add workers"
                )
        job_id = uuid.uuid4().hex
        if idempotency_key:
            existing = store.claim_idempotency_key(idempotency_key, job_id)
            if existing is not None:
                return Job(existing, settings)
        meta = JobMeta(
            features=chosen,
            template_id=template.id if template else None,
            n_chunks=len(chunks),
            created_at=time.time(),
        )
        if labels:
            meta.labels = {str(k): str(v) for k, v in labels.items()}
        app = client_app(settings)
        if audio is not None:
            # The chunks come once the recording is recognised (maie.asr_join).
            meta.input = "audio"
            meta.audio = {"name": audio.name, **asdict(audio.info)}
            AudioStore(s.celery_result_backend, job_ttl(s)).put_audio(job_id, audio.data)
            store.create(job_id, meta, [])
            canvas = audio_canvas(app, job_id)
        else:
            store.create(job_id, meta, [c.text for c in chunks])
            canvas = job_canvas(app, job_id, len(chunks), chosen, is_short(len(chunks), s))
        store.activate(job_id)
        try:
            canvas.apply_async()
        except (kombu.exceptions.KombuError, OSError, redis.RedisError) as exc:
            # Nothing was queued: forget the job and free its idempotency key for a new attempt.
            with contextlib.suppress(redis.RedisError):
                store.delete(job_id)
                if idempotency_key:
                    store.release_idempotency_key(idempotency_key, job_id)
            raise BackendUnavailable(
                f"cannot queue the job: broker {mask_url(s.celery_broker_url)} unreachable: {one_line(exc)}"
            ) from None
    except redis.RedisError as exc:
        raise BackendUnavailable(
            f"cannot reach Redis at {mask_url(s.celery_result_backend)}: {one_line(exc)}"
        ) from None
    return Job(job_id, settings)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


@contextlib.contextmanager
def _reaching_redis(settings: Settings) -> Iterator[None]:
    """Redis errors as one-line MAIE errors, for the public methods of `Job`."""
    try:
        yield
    except redis.RedisError as exc:
        raise BackendUnavailable(
            f"cannot reach Redis at {mask_url(settings.celery_result_backend)}: {one_line(exc)}"
        ) from None


class Job:
    """A handle on a submitted job: its status, its result, its cancellation."""

    def __init__(self, job_id: str, settings: Settings | None = None) -> None:
        # Job ids are UUIDs written as 32 hex digits; the dashed spelling names the same job.
        try:
            self.id = uuid.UUID(job_id).hex
        except ValueError:
            self.id = job_id
        self._given = settings
        self._settings = _settings(settings)
        self.store: JobRecords = _store(self._settings)

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    @property
    def app(self) -> Celery:
        """The Celery app of the job's broker: the process app, or the one for the caller's settings."""
        return client_app(self._given)

    def status(self) -> JobStatus:
        """The job's state and chunk progress; BackendUnavailable when Redis cannot be reached."""
        with _reaching_redis(self._settings):
            return self._status()

    def _status(self) -> JobStatus:
        st = self.store
        if not st.exists(self.id):
            return JobStatus(job_id=self.id, state="UNKNOWN")
        meta = st.meta(self.id)
        total = meta.enhanced_chunks
        done = st.enhanced_count(self.id) if total else 0
        error = st.error(self.id)
        state: Literal["PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED"]
        final = self._result()  # one place decides how a job ended (success wins over a late cancel)
        if final is not None:
            state = final.status
        elif done or self.app.AsyncResult(self.id).state == "STARTED":
            state = "RUNNING"
        else:
            state = "PENDING"
        stage = None
        if state in ("RUNNING", "PENDING"):
            stage = (
                "asr"
                if meta.waits_for_recognition
                else "enhance"
                if total and done < total
                else ("summary" if "summary" in meta.features else "enhance")
            )
        return JobStatus(
            job_id=self.id,
            state=state,
            chunks_total=total,
            chunks_done=done,
            stage=stage,
            error=JobError.model_validate(error) if error else None,
            submitted_at=meta.created_at,
            features=list(meta.features),
            template_id=meta.template_id,
        )

    def result(self) -> JobResult | None:
        """The final result, or None while the job runs; BackendUnavailable when Redis cannot be
        reached."""
        with _reaching_redis(self._settings):
            return self._result()

    def _result(self) -> JobResult | None:
        st = self.store
        raw = st.result(self.id)
        if raw is not None:
            return JobResult.model_validate_json(raw)
        known = st.exists(self.id)
        meta = st.meta(self.id) if known else JobMeta()
        features = list(meta.features)
        if st.cancelled(self.id):
            return JobResult(
                job_id=self.id,
                status="CANCELLED",
                features=features,
                template_id=meta.template_id,
                error=JobError(stage="job", code="job_cancelled", message="job was cancelled"),
                submitted_at=meta.created_at,
                finished_at=st.cancelled_at(self.id),
            )
        error = st.error(self.id)
        if error is not None:
            return JobResult(
                job_id=self.id,
                status="FAILURE",
                features=features,
                template_id=meta.template_id,
                error=JobError.model_validate(error),
                submitted_at=meta.created_at,
                finished_at=error.get("at"),
            )
        if not known:
            raise InputError(f"no job {self.id} (unknown id, or its records expired)")
        return None

    def labels(self) -> dict[str, str]:
        """The labels given to `submit` (empty for an unknown job)."""
        return dict(self.store.meta(self.id).labels)

    def raw_text(self) -> str | None:
        """The transcript as MAIE read it (its chunks, in order), or None once its records expired."""
        raw = self.store.raw_chunks(self.id)
        if not raw:
            return None
        return "\n".join(raw[i] for i in sorted(raw))

    def wait(self, timeout: float | None = None, poll: float = 0.005) -> JobResult:
        """Block until the job ends (success, failure or cancellation); TimeoutError after timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll
        unreachable: redis.RedisError | None = None
        while True:
            try:
                result = self._result()
                unreachable = None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Redis restarting: the job's records come back with it; keep waiting.
                result, unreachable = None, exc
            if result is not None:
                return result
            if deadline is not None and time.monotonic() > deadline:
                why = f" (Redis unreachable: {unreachable})" if unreachable is not None else ""
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s{why}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def cancel(self) -> None:
        """Mark the job cancelled and revoke its queued tasks; running LLM calls end at their timeout.

        A job that already ended (success or failure) keeps its outcome.
        """
        with _reaching_redis(self._settings):
            try:
                if self._result() is not None:
                    return
            except InputError:
                pass  # unknown or expired: marking it is harmless
            self.store.cancel(self.id)
            meta = self.store.meta(self.id) if self.store.exists(self.id) else JobMeta()
        ids = [self.id] + [chunk_task_id(self.id, i) for i in range(meta.n_chunks)]
        ids += [asr_part_task_id(self.id, p) for p in range(meta.asr_parts)]
        self.app.control.revoke(ids)
