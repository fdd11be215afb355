"""Lanes: short jobs are not served after every chunk of the long jobs queued before them.

Queues are first in, first out, so without lanes a one-chunk job submitted after a 60-chunk job
waits for that job's whole enhance stage. A job of at most SHORT_JOB_MAX_CHUNKS chunks is sent to
`<queue>.short` instead of `<queue>` (enhance and summary); every pool started with `-Q enhance`
consumes both, and takes from them in turn (kombu's round robin over a worker's queues on Redis,
one consumer per queue on RabbitMQ). A long job keeps the pool busy while no short job waits, and
gives up every other free slot while one does. SHORT_JOB_MAX_CHUNKS=0 sends every job to the main
queue (first in, first out).
"""

from __future__ import annotations

from collections.abc import Iterable

from maie.names import LANE_QUEUES, SHORT_SUFFIX
from maie.settings import Settings

__all__ = ["is_short", "lane", "with_lanes", "pool_of"]


def is_short(n_chunks: int, settings: Settings) -> bool:
    return 0 < n_chunks <= settings.short_job_max_chunks


def lane(queue: str, short: bool) -> str:
    """The queue a job's task of `queue` is sent to."""
    return queue + SHORT_SUFFIX if short and queue in LANE_QUEUES else queue


def with_lanes(queues: Iterable[str]) -> list[str]:
    """The queues a pool started on `queues` consumes: each with its short lane."""
    return [name for q in queues for name in ((q, q + SHORT_SUFFIX) if q in LANE_QUEUES else (q,))]


def pool_of(queue: str) -> str:
    """The pool's queue a lane belongs to (`enhance.short` → `enhance`)."""
    return queue.removesuffix(SHORT_SUFFIX)
