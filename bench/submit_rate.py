"""Submissions per second with an empty queue and with 10,000 tasks queued, and the Redis memory then.

    .venv/bin/python bench/submit_rate.py [--window 500] [--queued 10000] [--block 50] [--no-record]

No worker consumes: every job stays queued. One-chunk enhance + summary jobs (a few turns of the
bench's generated transcript) are submitted with `maie.submit` (QUEUE_MAX_DEPTH raised above the
target) in two windows:

  first    --window submissions from an empty queue
  filled   --window submissions once the enhance queue holds (--queued − --window) tasks

Between them `maie.submit` fills the queue. The direct way is the same canvas
(`maie.canvas.job_canvas`) sent with bare Celery: no input checks, no chunking, no queue depth check,
no job-store writes. In each window MAIE and the direct way alternate in blocks of --block, so both
see the same queue depth and machine load; the direct canvases queue tasks too (the filled window
ends --window above --queued). The memory is measured at the end (MEMORY USAGE over the DB's keys,
by group), then the DB is flushed.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import common as c
import redis_usage as ru

FEATURES = ["enhance", "summary"]


@dataclass
class Window:
    maie_seconds: float = 0.0
    direct_seconds: float = 0.0
    depth_before: int = 0
    depth_after: int = 0


def maie_block(text: str, n: int, settings: Any) -> float:
    from maie import submit

    started = time.perf_counter()
    for _ in range(n):
        submit(text, features=FEATURES, settings=settings)
    return time.perf_counter() - started


def direct_block(n: int, n_chunks: int, settings: Any) -> float:
    from maie.canvas import job_canvas
    from maie.celery import client_app

    app = client_app(settings)
    started = time.perf_counter()
    for _ in range(n):
        job_canvas(app, uuid.uuid4().hex, n_chunks, FEATURES).apply_async()
    return time.perf_counter() - started


def window(client: Any, text: str, n: int, block: int, n_chunks: int, settings: Any) -> Window:
    """`n` MAIE submissions and `n` direct canvases, alternating in blocks of `block`."""
    w = Window(depth_before=int(client.llen("enhance")))
    for start in range(0, n, block):
        c.check_alone()
        size = min(block, n - start)
        w.maie_seconds += maie_block(text, size, settings)
        w.direct_seconds += direct_block(size, n_chunks, settings)
    w.depth_after = int(client.llen("enhance"))
    return w


def fill(client: Any, text: str, target: int, settings: Any, timeout: float) -> tuple[int, float]:
    """`maie.submit` until the enhance queue holds `target` tasks: (jobs submitted, seconds)."""
    started = time.perf_counter()
    submitted = 0
    while (depth := int(client.llen("enhance"))) < target:
        c.check_alone()
        n = min(500, target - depth)
        maie_block(text, n, settings)
        submitted += n
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"the queue reached {depth} of {target} tasks in {timeout:.0f} s")
    return submitted, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--queued", type=int, default=10_000)
    p.add_argument("--block", type=int, default=50)
    p.add_argument("--timeout", type=float, default=480, help="seconds filling the queue may take")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    info_before = c.machine()
    print(f"submit_rate: {c.machine_line(info_before)}", flush=True)
    settings = c.bench_settings(queue_max_depth=2 * a.queued + 2 * a.window)
    text = c.transcript(8, seed=7)
    n_chunks = len(c.chunk_texts(text, settings))
    with c.bench_redis() as client:
        # Connections, the template and the token counter: once, before any clock starts.
        maie_block(text, 1, settings)
        direct_block(1, n_chunks, settings)
        first = window(client, text, a.window, a.block, n_chunks, settings)
        print(f"submit_rate: first window done at {first.depth_after} queued", flush=True)
        filled_jobs, fill_seconds = fill(client, text, a.queued - a.window, settings, a.timeout)
        print(f"submit_rate: {filled_jobs} jobs filled the queue in {fill_seconds:.1f} s", flush=True)
        filled = window(client, text, a.window, a.block, n_chunks, settings)
        c.check_alone()
        usage = ru.measure(client, skip=frozenset({c.OWNER_KEY}))
        maie_jobs = 1 + 2 * a.window + filled_jobs

    lines = report(a, text, n_chunks, first, filled, filled_jobs, fill_seconds, usage, maie_jobs)
    lines.append(f"- load average at the end: {c.load_average()} (before: {info_before['load']})")
    print("\n".join(lines))
    if not a.no_record:
        c.record("Submission rate with 10,000 tasks queued", lines, info_before)
        print(f"submit_rate: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace,
    text: str,
    n_chunks: int,
    first: Window,
    filled: Window,
    filled_jobs: int,
    fill_seconds: float,
    usage: ru.Usage,
    maie_jobs: int,
) -> list[str]:
    def row(name: str, w: Window) -> str:
        maie, direct = a.window / w.maie_seconds, a.window / w.direct_seconds
        return (
            f"| {name} | {w.depth_before:,}-{w.depth_after:,} | {maie:,.0f} | {direct:,.0f} | "
            f"**{maie / direct:.2f}** |"
        )

    queued = usage.keys["broker: queue lists"]
    store_bytes = sum(b for g, b in usage.bytes.items() if g.startswith("job store"))
    return [
        f"- Redis {c.REDIS_URL}; no worker; one process submitting in turn; jobs of {n_chunks} chunk "
        f"({len(text.encode())} bytes, 8 turns), features enhance + summary, QUEUE_MAX_DEPTH raised to "
        f"{2 * a.queued + 2 * a.window:,}",
        f"- each window: {a.window} `maie.submit` and {a.window} bare canvases "
        f"(`job_canvas(...).apply_async()`), alternating in blocks of {a.block}",
        "",
        "| window | enhance queue depth | MAIE submits/s | direct canvases/s | MAIE ÷ direct |",
        "|---|---|---:|---:|---:|",
        row("first", first),
        row(f"after {a.queued - a.window:,} queued", filled),
        "",
        f"- filling: {filled_jobs:,} `maie.submit` in {fill_seconds:.1f} s "
        f"({filled_jobs / fill_seconds:,.0f}/s)",
        f"- filled ÷ first MAIE rate: **{first.maie_seconds / filled.maie_seconds:.2f}**",
        f"- Redis at the end: {filled.depth_after:,} tasks queued ({maie_jobs:,} MAIE jobs, "
        f"{2 * a.window + 1:,} bare canvases) in {queued} queue list(s)",
        "",
        *ru.table({"at the end": usage}),
        "",
        f"- per queued MAIE job: {store_bytes / maie_jobs:,.0f} bytes in the job store; per queued task (all "
        f"groups but the job store): {(usage.total_bytes - store_bytes) / filled.depth_after:,.0f} bytes",
    ]


if __name__ == "__main__":
    sys.exit(main())
