"""The Celery canvases of a job, as pure functions: tests check their shape without running them.

    enhance + summary   chord(group(enhance_chunk[i]) → queue enhance, summarize → queue summary)
    enhance only        chord(group(enhance_chunk[i]), assemble)
    summary only        summarize
    audio               asr_split → queue asr, which replaces itself with
                        chord(group(asr_part[p]) → queue asr, asr_join → queue asr); asr_join
                        replaces itself with the canvas of the recognised text (one of the above)
    long transcripts    summarize replaces itself with
                        chord(group(partial_notes[level, g]) → queue summary, summarize(level))
                        and again, one level up, while the notes are still too long for one call

Signatures carry only ids, never transcript text. Task ids are readable in Flower: the job id is the
id of the job's last task, chunk tasks are `<job>-enhance-<i>`, partial-notes tasks
`<job>-notes-<level>-<g>` and the summary after level L `<job>-summary-<L>`.
"""

from __future__ import annotations

from celery import Celery, chord, group
from celery.canvas import Signature

from maie.lanes import lane
from maie.names import (
    ASR_JOIN,
    ASR_PART,
    ASR_SPLIT,
    ASSEMBLE,
    ENHANCE_CHUNK,
    PARTIAL_NOTES,
    SUMMARIZE,
    TASK_QUEUES,
)

__all__ = [
    "chunk_task_id",
    "notes_task_id",
    "asr_part_task_id",
    "job_canvas",
    "notes_canvas",
    "audio_canvas",
    "asr_parts_canvas",
]


def chunk_task_id(job_id: str, index: int) -> str:
    return f"{job_id}-enhance-{index}"


def notes_task_id(job_id: str, level: int, group_index: int) -> str:
    return f"{job_id}-notes-{level}-{group_index}"


def asr_part_task_id(job_id: str, index: int) -> str:
    return f"{job_id}-asr-{index}"


def job_canvas(
    app: Celery, job_id: str, n_chunks: int, features: list[str], short: bool = False
) -> Signature:
    """The canvas that runs a new job; a `short` one's tasks go to the short lanes (maie.lanes)."""
    body_name = SUMMARIZE if "summary" in features else ASSEMBLE
    body = app.signature(body_name, kwargs={"job_id": job_id}).set(
        task_id=job_id, queue=lane(TASK_QUEUES[body_name], short)
    )
    if "enhance" not in features:
        return body
    # ignore_result as the task itself says: without it here, the sender would also subscribe to
    # each chunk's result channel, which nobody reads (see maie.tasks.enhance_chunk).
    header = group(
        app.signature(
            ENHANCE_CHUNK,
            kwargs={"job_id": job_id, "index": i},
            options={
                "task_id": chunk_task_id(job_id, i),
                "ignore_result": True,
                "queue": lane(TASK_QUEUES[ENHANCE_CHUNK], short),
            },
        )
        for i in range(n_chunks)
    )
    return chord(header, body)


def notes_canvas(app: Celery, job_id: str, level: int, groups: list[tuple[int, int]]) -> Signature:
    """Notes at `level` per group [start, end) of the level below, then the summary of those notes."""
    header = group(
        app.signature(
            PARTIAL_NOTES,
            kwargs={"job_id": job_id, "level": level, "group": g, "start": start, "end": end},
        ).set(task_id=notes_task_id(job_id, level, g))
        for g, (start, end) in enumerate(groups)
    )
    body = app.signature(SUMMARIZE, kwargs={"job_id": job_id, "level": level})
    return chord(header, body.set(task_id=f"{job_id}-summary-{level}"))


def audio_canvas(app: Celery, job_id: str) -> Signature:
    """The canvas that starts an audio job: decode and cut the recording (queue asr)."""
    return app.signature(ASR_SPLIT, kwargs={"job_id": job_id}).set(task_id=job_id)


def asr_parts_canvas(app: Celery, job_id: str, n_parts: int) -> Signature:
    """Recognise the parts in parallel, then stitch them (and go on with the text's canvas)."""
    header = group(
        app.signature(ASR_PART, kwargs={"job_id": job_id, "index": p}).set(
            task_id=asr_part_task_id(job_id, p)
        )
        for p in range(n_parts)
    )
    return chord(header, app.signature(ASR_JOIN, kwargs={"job_id": job_id}).set(task_id=job_id))
