"""What every task shares: the job store, the retry and failure glue, progress and delivery counts.

`MaieTask` is the base of every MAIE task. It declares the retries once: an LLM that cannot be
reached (`BackendUnavailable`) sends the task back by `maie.retry.RetryPolicy`, behind one cooldown
per endpoint (maie.cooldown); every other error fails at once. Whatever fails is recorded against
the job with its stage, code and chunk, so `Job.wait()` can say which stage failed and why. Every
task start and LLM call marks its job's progress, which the reconciler (maie.reconcile) watches.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from functools import lru_cache
from typing import Any

from celery import Task as CeleryTask

from maie.backends import LLMBackend, get_backend, kind_of
from maie.celery import TASK_ROUTES, job_ttl, visibility_timeout
from maie.cooldown import Cooldown, EndpointCoolingDown, EndpointDown, GuardedBackend
from maie.errors import BackendUnavailable, JobCancelled, MaieError, WorkerLost
from maie.names import Task
from maie.result import JobError, JobResult
from maie.retry import GiveUp, RetryPolicy
from maie.settings import Settings, get_settings
from maie.store import JobStore

__all__ = [
    "MaieTask",
    "MAX_DELIVERIES",
    "settings",
    "store",
    "check_cancelled",
    "cancelled_error",
    "llm_backend",
    "receipt",
]

log = logging.getLogger("maie.tasks")

# A task whose worker dies (killed, out of memory) is delivered again after the visibility timeout.
# One that kills every worker it reaches would loop forever: each attempt (a retry is a new
# attempt) may be delivered this many times, then the job fails naming the task.
MAX_DELIVERIES = 3


def settings() -> Settings:
    return get_settings()


@lru_cache(maxsize=1)
def store() -> JobStore:
    return JobStore(settings().celery_result_backend, job_ttl(settings()), patient=True)


class MaieTask(CeleryTask):  # type: ignore[type-arg]
    """A MAIE task: retried while its LLM is unreachable, its final failure recorded on its job."""

    stage = "job"
    # What the task works on, for logs and messages, from its keyword arguments.
    what = "{job_id}"
    # Retries are bounded by RetryPolicy (time, then optionally count), not by Celery's count.
    max_retries = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.request.called_directly:  # not run by a worker: Celery's own call
                return super().__call__(*args, **kwargs)
            # Run by a worker: its request (id, retries, delivery) is already in place; Celery's
            # __call__ would push a bare one over it.
            return self.run(*args, **kwargs)
        except BackendUnavailable as exc:
            raise self.retry_or_give_up(exc) from None

    def describe(self) -> str:
        """`what` filled from the task's keyword arguments (their defaults where not given)."""
        defaults = {
            name: p.default
            for name, p in inspect.signature(self.run).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        return self.what.format(**{**defaults, **(self.request.kwargs or {})})

    def retry_or_give_up(self, exc: BackendUnavailable) -> MaieError:
        """Send the task back while the policy allows (raises celery's Retry); else return the
        error that ends it, saying how long it tried and what is known of its endpoint."""
        what = self.describe()
        job_id = str((self.request.kwargs or {}).get("job_id", ""))
        if job_id:
            check_cancelled(job_id)  # a call that ended after the job was cancelled is not retried
        st, s, now = store(), settings(), time.time()
        if isinstance(exc, EndpointCoolingDown):
            since, failures = st.retry_since(job_id, what), None
        else:
            since, failures = st.note_retry(job_id, what)
        policy = RetryPolicy.from_settings(s, visibility_timeout(s))
        cooling = exc.retry_after if isinstance(exc, EndpointCoolingDown) else None
        decision = policy.decide(spent=now - since, failures=failures, cooling_down_for=cooling)
        if isinstance(decision, GiveUp):
            down = self._endpoint_down()
            where = f"; {down.describe(now)}" if down is not None else ""
            spent = now - since
            return BackendUnavailable(
                f"{exc} (gave up after {spent:.0f} s of retries, {decision.bound}{where})"
            )
        if cooling is not None:
            log.info("%s: %s; waiting %.1f s", what, exc, decision.countdown)
        else:
            log.warning("%s: %s; retry %d in %ss", what, exc, failures, round(decision.countdown, 1))
        if job_id:
            st.touch(job_id, now + decision.countdown)
        raise self.retry(exc=exc, countdown=decision.countdown)

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

    def started(self, job_id: str, redispatch: int = 0) -> None:
        """Count this delivery of the task's attempt, and note the job's progress for the reconciler."""
        self.check_deliveries(store().start(job_id, self.attempt(redispatch), self.source_queue()))

    def attempt(self, redispatch: int = 0) -> str:
        """What this delivery counts against: the task's attempt (e.g. "chunk 3:0"). A task sent
        again by the reconciler counts its deliveries apart from the lost original's."""
        what = self.describe()
        sent = f"{what}:r{redispatch}" if redispatch else what
        return f"{sent}:{self.request.retries}"

    def source_queue(self) -> str | None:
        """The queue (lane) this delivery came from, whose progress the reconciler watches."""
        delivered = (self.request.delivery_info or {}).get("routing_key")
        return delivered or TASK_ROUTES.get(self.name, {}).get("queue")

    def check_deliveries(self, n: int) -> None:
        """Refuse a task attempt delivered more than MAX_DELIVERIES times (it kills its worker)."""
        what = self.describe()
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

    def _endpoint_down(self) -> EndpointDown | None:
        """What is known about the endpoint of the task's stage, if it is marked down."""
        s = settings()
        url = kind_of(s).endpoint_url("enhance" if self.stage == "enhance" else "summary", s)
        return _cooldown(url).state() if url is not None else None


def _cooldown(url: str) -> Cooldown:
    s = settings()
    return Cooldown(
        store().redis,
        url,
        cap_seconds=min(s.task_retry_backoff_max, visibility_timeout(s) / 2),
        probe_ttl=s.llm_server.request_timeout_seconds,
    )


def llm_backend(task: Task, job_id: str, *, touch: bool = True) -> LLMBackend:
    """This process's backend for `task`, behind its endpoint's cooldown, reporting each finished
    call as progress of the job (unless `touch` is False: the caller marks progress itself)."""
    s = settings()
    inner = get_backend(task, s)
    url = kind_of(s).endpoint_url(task, s)
    progress = (lambda: store().touch(job_id)) if touch else None
    return GuardedBackend(inner, _cooldown(url) if url is not None else None, progress)


def cancelled_error(job_id: str) -> JobCancelled:
    return JobCancelled(f"job {job_id} was cancelled")


def check_cancelled(job_id: str) -> None:
    if store().cancelled(job_id):
        raise cancelled_error(job_id)


def receipt(result: JobResult) -> dict[str, Any]:
    """What the last task returns to Celery (and Flower shows): ids and counts, never the text.
    The result itself is in the job store, read by `Job.result()`."""
    return {
        "job_id": result.job_id,
        "status": result.status,
        "chunks": len(result.chunks),
        "degraded": [c.index for c in result.chunks if c.degraded],
    }
