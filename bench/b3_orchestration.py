"""B3 · orchestration overhead: what Celery, Redis and the pools cost when the LLM costs nothing.

    .venv/bin/python bench/b3_orchestration.py [--chunks 400] [--jobs 30] [--clients 16] [--no-record]

The LLM is tests/fakes/server.py run as a subprocess: it answers at once, deterministically, and its
replies pass MAIE's faithfulness check, so every chunk is one request. Both pools run as users start
them (scripts/start-worker.sh enhance|summary, threads, concurrency 16 each) against it.

Throughput, one run, three phases:
  direct-1  the job's N chunk requests from K concurrent `openai` clients (K threads)
  maie      one enhance-only job of N small chunks: submit → N enhance_chunk tasks on the enhance
            pool → chord body (assemble) on the summary pool; chunk tasks/s = N / (submit → result)
  direct-2  direct-1 again; the ceiling is the mean of both
Latency, one chunk, sequential:
  direct    the chunk's request from one client, J times
  maie      J one-chunk jobs: submit → result, the result polled every 2 ms (what the pipeline adds)
  maie+wait J more with `Job.wait()` as callers use it (its poll starts at 50 ms and grows ×1.5)
Added latency = median(job) − median(direct request).
Targets: ≥ 100 chunk tasks/s; ≤ 50 ms added.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import common as c

TARGET_RATE = 100.0
TARGET_ADDED_MS = 50.0
MODEL = "bench-model"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=400)
    p.add_argument("--jobs", type=int, default=30, help="one-chunk jobs for the latency figure")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout", type=float, default=180, help="bound of each phase, seconds")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    from fakes.server_process import FakeServerProcess

    from maie import submit
    from maie.enhance import build_messages

    info_before = c.machine()
    print(f"b3: {c.machine_line(info_before)}", flush=True)
    with c.temp_dir("maie-b3-") as tmp, c.bench_redis(), c.Procs() as procs:
        fake = FakeServerProcess(name="bench", model=MODEL)
        procs.enter_context(fake)
        env = c.pool_env(
            LLM_BACKEND="vllm_server",
            LLM_SERVER__ENHANCE_BASE_URL=fake.base_url,
            LLM_SERVER__ENHANCE_MODEL_NAME=MODEL,
            LLM_ENHANCE__MAX_TOKENS=str(a.max_tokens),
        )
        enhance = c.start_pool(procs, "enhance", env, tmp)
        c.start_pool(procs, "summary", env, tmp)

        settings = c.bench_settings(chunk_max_tokens=36)
        text = c.transcript(a.chunks)
        chunks = c.chunk_texts(text, settings)
        if len(chunks) != a.chunks:
            raise SystemExit(f"expected {a.chunks} chunks, chunking made {len(chunks)}")
        conversations = [build_messages(t) for t in chunks]
        one_text = c.transcript(1, seed=5)
        one_conv = [build_messages(t) for t in c.chunk_texts(one_text, settings)]

        def direct() -> c.DirectRun:
            return c.direct_chat(
                fake.base_url, MODEL, conversations, concurrency=a.clients, max_tokens=a.max_tokens
            )

        # Warm-up: connections, the pools' first tasks, the server's first requests.
        c.direct_chat(
            fake.base_url, MODEL, conversations[:64], concurrency=a.clients, max_tokens=a.max_tokens
        )
        c.run_job(c.transcript(32, seed=99), settings, timeout=a.timeout)

        d1 = direct()
        print(f"b3: direct-1 {len(chunks)} requests in {d1.seconds:.2f} s · load {c.load_average()}")
        m_seconds, result = c.run_job(text, settings, timeout=a.timeout)
        print(f"b3: maie {len(chunks)} chunk tasks in {m_seconds:.2f} s · load {c.load_average()}")
        d2 = direct()
        print(f"b3: direct-2 {len(chunks)} requests in {d2.seconds:.2f} s · load {c.load_average()}")
        load_throughput = c.load_average()

        # Latency of one chunk.
        lat_direct = [
            c.direct_chat(fake.base_url, MODEL, one_conv, concurrency=1, max_tokens=a.max_tokens).latencies[0]
            for _ in range(a.jobs)
        ]
        lat_job: list[float] = []
        for _ in range(a.jobs):
            seconds, _ = c.run_job(one_text, settings, timeout=30, poll=0.002)
            lat_job.append(seconds)
        lat_wait: list[float] = []
        for _ in range(a.jobs):
            t0 = time.perf_counter()
            res = submit(one_text, features={"enhance"}, settings=settings).wait(timeout=30)
            lat_wait.append(time.perf_counter() - t0)
            if res.status != "SUCCESS":
                raise RuntimeError(f"one-chunk job ended {res.status}: {res.error}")
        c.check_alone()
        print(f"b3: latency measured · load {c.load_average()}", flush=True)
        concurrency = c.pool_concurrency(enhance)

    lines = report(
        a, len(chunks), d1, d2, m_seconds, result, lat_direct, lat_job, lat_wait, concurrency, load_throughput
    )
    print("\n".join(lines))
    if not a.no_record:
        c.record("B3 orchestration overhead", lines, info_before)
        print(f"b3: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace,
    n: int,
    d1: Any,
    d2: Any,
    m_seconds: float,
    result: Any,
    lat_direct: list[float],
    lat_job: list[float],
    lat_wait: list[float],
    concurrency: str,
    load_throughput: str,
) -> list[str]:
    direct_rates = [n / d1.seconds, n / d2.seconds]
    direct_rate = sum(direct_rates) / 2
    maie_rate = n / m_seconds
    stage = result.metrics["enhance"].wall_seconds
    requests = sum(ch.attempts for ch in result.chunks)
    ms = 1000.0
    med_direct = c.median(lat_direct) * ms
    added = c.median(lat_job) * ms - med_direct
    added_wait = c.median(lat_wait) * ms - med_direct
    ok_rate = maie_rate >= TARGET_RATE
    ok_lat = added <= TARGET_ADDED_MS
    lines = [
        "- LLM: tests/fakes/server.py subprocess (instant deterministic replies) on 127.0.0.1; Redis "
        f"{c.REDIS_URL}; enhance and summary pools via scripts/start-worker.sh (threads, concurrency "
        f"{concurrency} each)",
        f"- throughput work: one enhance-only job of {n} one-turn chunks ({requests} requests) "
        f"vs the same {n} requests from {a.clients} concurrent openai clients",
        "",
        "| path | chunks | wall s | chunks/s |",
        "|---|---:|---:|---:|",
        f"| direct-1: {a.clients} openai clients | {n} | {d1.seconds:.2f} | {direct_rates[0]:.0f} |",
        f"| MAIE: submit → {n} enhance_chunk tasks → assemble | {n} | {m_seconds:.2f} | {maie_rate:.0f} |",
        f"| MAIE, enhance stage only (first chunk start → last chunk end) | {n} | {stage:.2f} | "
        f"{n / stage:.0f} |",
        f"| direct-2 | {n} | {d2.seconds:.2f} | {direct_rates[1]:.0f} |",
        "",
        f"- **MAIE {maie_rate:.0f} chunk tasks/s · ratio MAIE / direct = {maie_rate / direct_rate:.2f}** · "
        f"target ≥ {TARGET_RATE:.0f} chunk tasks/s → **{c.verdict(ok_rate)}** (load average then: "
        f"{load_throughput})",
        "",
        f"| one-chunk latency, {a.jobs} sequential runs | median ms | p90 ms |",
        "|---|---:|---:|",
        f"| direct request (one openai client) | {med_direct:.1f} | {c.pct(lat_direct, 90) * ms:.1f} |",
        f"| MAIE job, submit → result (polled every 2 ms) | {c.median(lat_job) * ms:.1f} | "
        f"{c.pct(lat_job, 90) * ms:.1f} |",
        f"| MAIE job, submit → Job.wait() (default poll) | {c.median(lat_wait) * ms:.1f} | "
        f"{c.pct(lat_wait, 90) * ms:.1f} |",
        "",
        f"- **added latency (median job − median request) = {added:.1f} ms**; with Job.wait()'s default "
        f"poll {added_wait:.1f} ms · target ≤ {TARGET_ADDED_MS:.0f} ms → **{c.verdict(ok_lat)}**"
        + (
            ""
            if added_wait <= TARGET_ADDED_MS
            else " for the pipeline; missed as callers see it through "
            "Job.wait(), whose first poll sleeps 50 ms and the next ones 75, 112 ms ..."
        ),
        f"- load average at the end: {c.load_average()}",
    ]
    if not ok_rate:
        lines.append(
            "- why missed: a chunk task is CPU-bound in its one Python process (about 7 ms of CPU each when "
            "profiled on the 2-core machine, bench/RESULTS.md: the openai client's request and reply, "
            "kombu's message fetch and acknowledgement, Celery's tracing, events and log lines, and the "
            "job store's two round trips), on a machine of 2 cores that also runs Redis, the summary "
            "pool, the fake server and this client; the direct clients' own rate is the ceiling"
        )
    if not ok_lat:
        lines.append(
            "- why missed: a one-chunk job is two tasks on two pools (enhance_chunk, then the chord body), "
            "each picked from Redis, with the result written and read back"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
