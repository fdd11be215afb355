"""Redis memory per job, and whether it comes back once the job's records expire.

    .venv/bin/python bench/redis_memory.py [--jobs 200] [--in-flight 16] [--ttl 150] [--data PATH]
                                           [--no-record]

Both pools run as users start them (scripts/start-worker.sh enhance|summary) against an instant
fake LLM (tests/fakes/server.py), with JOB_TTL_SECONDS=--ttl and BROKER_VISIBILITY_TIMEOUT half of
it (the TTL must exceed it). The run, in the benchmark's own Redis DB:

  baseline   the pools started, no job yet
  after      N enhance + summary jobs run to completion (at most --in-flight at a time, so no job
             waits in the queue long enough for its records to expire), transcripts taken in turn
             from the AMI meetings of summary_dev.jsonl (549-5,958 words)
  expired    polled every 5 s until no key of a job is left (its records, Celery's task results
             and chord keys), at most max(TTL, 300 s) plus 30 s after the last job ended: Celery
             5.7 keeps a chord's "done" marker 300 s, whatever result_expires says

Memory is the sum of MEMORY USAGE over the DB's keys (the instance's used_memory is shown too, but
other DBs of a shared Redis move it). The direct way: the job's texts themselves, the raw
transcript, the enhanced text and the summary (JSON) in UTF-8 bytes; the ratio is the Redis memory
a job takes over those bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import common as c
import redis_usage as ru

MODEL = "bench-model"
CHORD_DONE_SECONDS = 300  # Celery's redis backend: a chord's done marker (the .c key) lives this long
DEFAULT_DATA = c.ROOT.parent / "shared" / "data" / "summary_dev.jsonl"


def transcripts(path: Path) -> list[str]:
    """The meetings of a summary_dev.jsonl, or (without the file) generated turns of similar sizes."""
    if path.exists():
        return [json.loads(line)["transcript"] for line in path.read_text().splitlines() if line.strip()]
    print(f"redis_memory: {path} not found: generated transcripts instead", flush=True)
    return [c.transcript(n, seed=n) for n in (40, 80, 160, 240, 320, 400)]


def run_jobs(texts: list[str], n: int, settings: Any, in_flight: int, timeout: float) -> tuple[int, float]:
    """Run `n` enhance + summary jobs, texts in turn, at most `in_flight` at a time: (text bytes of
    every job summed: raw + enhanced + summary, seconds)."""
    from maie import submit

    started = time.monotonic()
    running: dict[str, tuple[Any, str]] = {}
    submitted = text_bytes = 0
    while submitted < n or running:
        c.check_alone()
        while submitted < n and len(running) < in_flight:
            text = texts[submitted % len(texts)]
            job = submit(text, features={"enhance", "summary"}, settings=settings)
            running[job.id] = (job, text)
            submitted += 1
        for job_id, (job, text) in list(running.items()):
            result = job.result()
            if result is None:
                continue
            if result.status != "SUCCESS":
                raise RuntimeError(f"job {job_id} ended {result.status}: {result.error}")
            summary = json.dumps(result.summary, ensure_ascii=False)
            text_bytes += sum(len(t.encode()) for t in (text, result.enhanced_text or "", summary))
            del running[job_id]
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{len(running) + n - submitted} of {n} jobs unfinished after {timeout:.0f} s")
        time.sleep(0.2)
    return text_bytes, time.monotonic() - started


def wait_for_expiry(client: Any, deadline: float) -> tuple[ru.Usage, float]:
    """Measure every 5 s until no key of a job is left, or `deadline` (monotonic) passes:
    (the last measurement, seconds waited)."""
    started = time.monotonic()
    while True:
        now = ru.measure(client, skip=frozenset({c.OWNER_KEY}))
        if not now.job_keys() or time.monotonic() > deadline:
            return now, time.monotonic() - started
        time.sleep(5.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--in-flight", type=int, default=16, help="jobs submitted and not yet ended, at most")
    p.add_argument("--ttl", type=int, default=150, help="JOB_TTL_SECONDS of the pools and the submitter")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a summary_dev.jsonl")
    p.add_argument("--timeout", type=float, default=420, help="seconds the jobs may take in all")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    from fakes.server_process import FakeServerProcess

    texts = transcripts(a.data)
    visibility = a.ttl // 2
    info_before = c.machine()
    print(f"redis_memory: {c.machine_line(info_before)}", flush=True)
    skip = frozenset({c.OWNER_KEY})
    with c.temp_dir("maie-redis-memory-") as tmp, c.bench_redis() as client, c.Procs() as procs:
        fake = FakeServerProcess(name="bench", model=MODEL)
        procs.enter_context(fake)
        ttl_env = {"JOB_TTL_SECONDS": str(a.ttl), "BROKER_VISIBILITY_TIMEOUT": str(visibility)}
        enhance = c.start_server_pools(procs, fake.base_url, MODEL, tmp, **ttl_env)
        settings = c.bench_settings(job_ttl_seconds=a.ttl, broker_visibility_timeout=visibility)
        time.sleep(2.0)  # the pools' first heartbeats and bindings
        baseline = ru.measure(client, skip)
        text_bytes, seconds = run_jobs(texts, a.jobs, settings, a.in_flight, a.timeout)
        ended = time.monotonic()
        if seconds >= a.ttl:
            raise SystemExit(
                f"the jobs took {seconds:.0f} s, the TTL is {a.ttl} s: raise --ttl or lower --jobs"
            )
        time.sleep(1.0)  # the last acknowledgements and events
        after = ru.measure(client, skip)
        print(f"redis_memory: {a.jobs} jobs in {seconds:.1f} s; waiting for expiry", flush=True)
        expired, waited = wait_for_expiry(client, ended + max(a.ttl, CHORD_DONE_SECONDS) + 30)
        c.check_alone()
        concurrency = c.pool_concurrency(enhance)
        chunks = sum(len(c.chunk_texts(texts[i % len(texts)], settings)) for i in range(a.jobs))

    lines = report(a, baseline, after, expired, text_bytes, seconds, waited, concurrency, chunks, visibility)
    lines.append(f"- load average at the end: {c.load_average()} (before: {info_before['load']})")
    print("\n".join(lines))
    if not a.no_record:
        c.record("Redis memory per job and after expiry", lines, info_before)
        print(f"redis_memory: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace,
    baseline: ru.Usage,
    after: ru.Usage,
    expired: ru.Usage,
    text_bytes: int,
    seconds: float,
    waited: float,
    concurrency: str,
    chunks: int,
    visibility: int,
) -> list[str]:
    per_job = (after.total_bytes - baseline.total_bytes) / a.jobs
    keys_per_job = (after.total_keys - baseline.total_keys) / a.jobs
    text_per_job = text_bytes / a.jobs
    left_bytes = expired.total_bytes - baseline.total_bytes
    left_keys = expired.total_keys - baseline.total_keys
    left_jobs = expired.job_keys()
    shared = sorted(g for g in expired.keys if not ru.per_job(g) and expired.keys[g] > baseline.keys[g])

    def ttl_of(g: str) -> str:
        n = expired.persistent[g]
        return f"{g} ({n} without TTL)" if n else f"{g} (expires in {expired.longest_ttl[g]} s)"

    returned = (
        "yes"
        if left_jobs == 0
        else f"no, {left_jobs} keys of jobs left: "
        + ", ".join(ttl_of(g) for g in expired.keys if ru.per_job(g) and expired.keys[g])
    )
    return [
        f"- LLM: tests/fakes/server.py (instant); Redis {c.REDIS_URL}; enhance and summary pools via "
        f"scripts/start-worker.sh (threads, concurrency {concurrency}); JOB_TTL_SECONDS={a.ttl}, "
        f"BROKER_VISIBILITY_TIMEOUT={visibility}",
        f"- work: {a.jobs} enhance + summary jobs ({chunks} chunks), at most {a.in_flight} at a time, the "
        f"{a.data.name} meetings in turn; all ended in {seconds:.1f} s",
        "",
        *ru.table({"baseline": baseline, "after the jobs": after, f"after {waited:.0f} s more": expired}),
        "",
        f"- **per job: {per_job / 1024:,.1f} KiB of Redis memory, {keys_per_job:.1f} keys**; the job's texts "
        f"(raw + enhanced + summary): {text_per_job / 1024:,.1f} KiB",
        f"- **memory ÷ text bytes: {per_job / text_per_job:.2f}**",
        f"- every key of the jobs gone after expiry: **{returned}**; this DB against the baseline: "
        f"{left_keys:+d} keys, {left_bytes / 1024:+,.1f} KiB"
        + (
            f" (pool state of fixed size, created by the first job: {', '.join(map(ttl_of, shared))})"
            if shared
            else ""
        )
        + f"; instance used_memory {(expired.used_memory - baseline.used_memory) / 1024:+,.1f} KiB "
        "(every DB of the shared Redis)",
    ]


if __name__ == "__main__":
    sys.exit(main())
