"""When a task whose LLM could not be reached runs again, and when it gives up: one policy.

The budget is time (`TASK_RETRY_DEADLINE_SECONDS` from the task's first failure), optionally also a
count (`TASK_MAX_RETRIES`), with capped exponential backoff and full jitter between calls. A task
that found its endpoint cooling down made no call: it comes back when the cooldown ends, and that
wait counts against the deadline but not against the count. Pure: tested without Celery or Redis.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from celery.utils.time import get_exponential_backoff_interval

from maie.cooldown import PROBE_WAIT_SECONDS
from maie.settings import Settings

__all__ = ["RetryPolicy", "Retry", "GiveUp"]


@dataclass(frozen=True)
class Retry:
    countdown: float  # seconds until the task runs again


@dataclass(frozen=True)
class GiveUp:
    bound: str  # the setting that ended the retries, as `NAME=value`


@dataclass(frozen=True)
class RetryPolicy:
    deadline_seconds: float
    max_retries: int | None
    # The longest wait between two calls. A countdown is held by the worker unacknowledged, so it
    # also stays well within the broker's visibility timeout (see maie.celery).
    backoff_cap: float

    @classmethod
    def from_settings(cls, settings: Settings, visibility_timeout: float) -> RetryPolicy:
        return cls(
            deadline_seconds=settings.task_retry_deadline_seconds,
            max_retries=settings.task_max_retries,
            backoff_cap=min(float(settings.task_retry_backoff_max), visibility_timeout / 2),
        )

    def decide(
        self, *, spent: float, failures: int | None, cooling_down_for: float | None = None
    ) -> Retry | GiveUp:
        """After `spent` seconds of retries and `failures` failed calls (None: no call was made,
        the endpoint is cooling down for `cooling_down_for` more seconds): retry when, or give up."""
        left = self.deadline_seconds - spent
        if failures is not None and self.max_retries is not None and failures > self.max_retries:
            return GiveUp(f"TASK_MAX_RETRIES={self.max_retries}")
        if left <= 0:
            return GiveUp(f"TASK_RETRY_DEADLINE_SECONDS={self.deadline_seconds}")
        cap = min(self.backoff_cap, left)
        if cooling_down_for is not None:
            # Spread the returning tasks over the probe's wait, so they do not all arrive at once.
            return Retry(min(cap, cooling_down_for + random.uniform(0, min(cap, PROBE_WAIT_SECONDS))))
        backoff = get_exponential_backoff_interval(
            factor=1, retries=(failures or 1) - 1, maximum=int(cap) or 1, full_jitter=True
        )
        return Retry(min(cap, backoff))
