"""The names the pipeline's parts agree on: stages, queues, Celery task names and Redis keys.

Each lives here once, so the canvas, the workers, the reconciler, the job store and the clients
cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "Task",
    "TASKS",
    "QUEUES",
    "LANE_QUEUES",
    "SHORT_SUFFIX",
    "ALL_QUEUES",
    "ENHANCE_CHUNK",
    "SUMMARIZE",
    "PARTIAL_NOTES",
    "ASSEMBLE",
    "ASR_SPLIT",
    "ASR_PART",
    "ASR_JOIN",
    "TASK_QUEUES",
    "KEY_PREFIX",
    "JOB_PREFIX",
]

# The two LLM stages: each is a job feature, a queue, a worker pool and a backend of its own.
Task = Literal["enhance", "summary"]
TASKS: tuple[Task, ...] = ("enhance", "summary")
# Every queue: the LLM stages, then speech recognition.
QUEUES: tuple[str, ...] = (*TASKS, "asr")

# Short jobs wait in a lane of their own beside the enhance and summary queues: each pool consumes
# both, taking from them in turn, so a job of a few chunks is not served after every chunk of the
# long jobs queued before it (maie.lanes).
LANE_QUEUES: tuple[Task, ...] = TASKS
SHORT_SUFFIX = ".short"
# Every queue a broker holds.
ALL_QUEUES: tuple[str, ...] = (*QUEUES, *(q + SHORT_SUFFIX for q in LANE_QUEUES))

# Celery task names (what messages carry; Flower and `celery inspect` show them).
ENHANCE_CHUNK = "maie.enhance_chunk"
SUMMARIZE = "maie.summarize"
PARTIAL_NOTES = "maie.partial_notes"
ASSEMBLE = "maie.assemble"
ASR_SPLIT = "maie.asr_split"
ASR_PART = "maie.asr_part"
ASR_JOIN = "maie.asr_join"

# Which queue serves each task. assemble ends enhance-only jobs; it runs on the summary pool
# (the chord body of every job lives there) but counts as the enhance stage.
TASK_QUEUES: dict[str, str] = {
    ASR_SPLIT: "asr",
    ASR_PART: "asr",
    ASR_JOIN: "asr",
    ENHANCE_CHUNK: "enhance",
    SUMMARIZE: "summary",
    PARTIAL_NOTES: "summary",
    ASSEMBLE: "summary",
}

# Redis keys: everything MAIE writes starts with KEY_PREFIX; a job's records with JOB_PREFIX.
KEY_PREFIX = "maie:"
JOB_PREFIX = f"{KEY_PREFIX}job:"
