"""What operators graph, beyond Flower's task counts and runtimes: queue depth per queue, LLM tokens
and time per endpoint (so tokens per second), chunks enhanced and degraded, job latency.

Workers add to counters in one Redis hash (`maie:metrics`, in the result backend's Redis), so every
worker and pool of a deployment counts into the same totals without a port of its own; `maie
metrics` serves them, with the queue depths read at scrape time, in Prometheus' text format:

    maie_queue_depth{queue}                                   messages waiting (gauge)
    maie_llm_prompt_tokens_total{task,endpoint,model}         tokens sent
    maie_llm_completion_tokens_total{task,endpoint,model}     tokens generated
    maie_llm_seconds_total{task,endpoint,model}               time spent in LLM calls
    maie_llm_calls_total{task,endpoint,model}                 stage calls (a chunk, a summary, notes)
    maie_chunks_total{outcome}                                enhanced chunks: ok, degraded, failed
    maie_job_duration_seconds{status}                         submit to result (summary: _sum, _count)

Counters only grow (Prometheus' rate() handles restarts of the exporter); recording never fails a
task: a Redis error is logged and the count is lost. A chunk's counts are the exception: they are
written with the chunk's record, in its round trip (`add_chunk`), and fail or succeed with it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import Any

import redis

from maie.names import KEY_PREFIX
from maie.settings import Settings
from maie.store import redis_client

__all__ = ["KEY", "FAMILIES", "record_llm", "add_chunk", "record_job", "MaieCollector", "serve"]

log = logging.getLogger("maie.metrics")

KEY = f"{KEY_PREFIX}metrics"
# The metric families `maie metrics` serves (the dashboard in monitoring/ is checked against them).
FAMILIES = (
    "maie_queue_depth",
    "maie_llm_prompt_tokens_total",
    "maie_llm_completion_tokens_total",
    "maie_llm_seconds_total",
    "maie_llm_calls_total",
    "maie_chunks_total",
    "maie_job_duration_seconds",
)
_SEP = "\x1f"  # between labels in a hash field: cannot occur in an endpoint URL or a model name


def _field(name: str, *labels: str) -> str:
    return _SEP.join((name, *labels))


def _queue(pipe: Any, ints: dict[str, int], floats: dict[str, float]) -> None:
    for field, n in ints.items():
        pipe.hincrby(KEY, field, n)
    for field, x in floats.items():
        pipe.hincrbyfloat(KEY, field, x)


def _add(url: str, ints: dict[str, int], floats: dict[str, float]) -> None:
    try:
        pipe = redis_client(url).pipeline(transaction=False)
        _queue(pipe, ints, floats)
        pipe.execute()
    except redis.RedisError as exc:  # a lost count, never a failed task
        log.warning("metrics not recorded: %s", exc)


def _llm_fields(
    task: str, endpoint: str, model: str, prompt_tokens: int, completion_tokens: int, seconds: float
) -> tuple[dict[str, int], dict[str, float]]:
    labels = (task, endpoint, model)
    ints = {
        _field("prompt_tokens", *labels): prompt_tokens,
        _field("completion_tokens", *labels): completion_tokens,
        _field("calls", *labels): 1,
    }
    return ints, {_field("seconds", *labels): seconds}


def record_llm(
    url: str, task: str, endpoint: str, model: str, prompt_tokens: int, completion_tokens: int, seconds: float
) -> None:
    """One stage's LLM work (a chunk, a summary, a part's notes) against an endpoint and model."""
    _add(url, *_llm_fields(task, endpoint, model, prompt_tokens, completion_tokens, seconds))


def add_chunk(
    pipe: Any, *, degraded: bool, failed: bool, llm: tuple[str, str, str, int, int, float] | None = None
) -> None:
    """Queue the counts of one enhanced chunk, and with `llm` (the arguments of record_llm after the
    URL) its LLM work, on `pipe`: the chunk task sends them with the chunk's record (this runs once
    per chunk), so they are written or lost with it."""
    outcome = "failed" if failed else "degraded" if degraded else "ok"
    ints, floats = _llm_fields(*llm) if llm is not None else ({}, {})
    _queue(pipe, {_field("chunks", outcome): 1, **ints}, floats)


def record_job(url: str, status: str, seconds: float) -> None:
    _add(url, {_field("jobs", status): 1}, {_field("job_seconds", status): max(0.0, seconds)})


class MaieCollector:
    """A prometheus_client collector reading the counters and queue depths at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        from maie.submit import queue_depths

        depth = GaugeMetricFamily("maie_queue_depth", "Messages waiting in a queue", labels=["queue"])
        for queue, waiting in queue_depths(self.settings).items():
            depth.add_metric([queue], waiting)
        yield depth

        raw = redis_client(self.settings.celery_result_backend).hgetall(KEY)
        llm = {
            name: CounterMetricFamily(f"maie_llm_{name}", text, labels=["task", "endpoint", "model"])
            for name, text in (
                ("prompt_tokens", "Prompt tokens sent to an LLM endpoint"),
                ("completion_tokens", "Tokens an LLM endpoint generated"),
                ("seconds", "Seconds spent in LLM calls"),
                ("calls", "Stage calls to an LLM endpoint (a chunk, a summary, a part's notes)"),
            )
        }
        chunks = CounterMetricFamily("maie_chunks", "Enhanced chunks by outcome", labels=["outcome"])
        jobs: dict[str, dict[str, float]] = {}
        for field, value in sorted(raw.items()):
            name, *labels = str(field).split(_SEP)
            if name in llm and len(labels) == 3:
                llm[name].add_metric(labels, float(value))
            elif name == "chunks" and len(labels) == 1:
                chunks.add_metric(labels, float(value))
            elif name in ("jobs", "job_seconds") and len(labels) == 1:
                jobs.setdefault(labels[0], {})[name] = float(value)
        yield from llm.values()
        yield chunks
        latency = SummaryMetricFamily(
            "maie_job_duration_seconds", "Seconds from submission to result, by status", labels=["status"]
        )
        for status, values in sorted(jobs.items()):
            latency.add_metric([status], int(values.get("jobs", 0)), values.get("job_seconds", 0.0))
        yield latency


def serve(settings: Settings, port: int, address: str) -> None:
    """Serve /metrics until SIGTERM or SIGINT."""
    from prometheus_client import start_http_server
    from prometheus_client.core import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(MaieCollector(settings))
    # Blocked before the server's thread starts (it inherits the mask): only sigwait receives them.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    server, thread = start_http_server(port, addr=address, registry=registry)
    log.info("metrics on http://%s:%d/metrics", address, port)
    try:
        signal.sigwait(stop)
    finally:
        server.shutdown()
        thread.join(10)
