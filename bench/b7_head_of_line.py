"""B7 · head of line: how long does a short job take when long jobs were submitted just before it?

    .venv/bin/python bench/b7_head_of_line.py [--repeats 3] [--long-words 21000] [--no-record]

One fake OpenAI server (tests/fakes/server.py) answering every request after a fixed 0.5 s, the
enhance and summary pools as users start them (scripts/start-worker.sh: threads, concurrency 16).
A short job (about 1,500 characters: one chunk) runs alone, then right behind 1 and behind 10 long
jobs (about 21,000 words each: some 60 chunks), every job enhanced and summarised. Both ways in the
same run, on the same pools: with the short lanes (SHORT_JOB_MAX_CHUNKS=4, the default: maie.lanes)
and without (SHORT_JOB_MAX_CHUNKS=0: one first-in-first-out queue per stage). Reported: the short
job's latency (submit → result) behind the long ones ÷ its latency alone, medians over the repeats.
Target: ≤ 1.5 behind one long job.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import common as c

TARGET = 1.5
MODEL = "bench-model"
DELAY = 0.5
MODES = {"lanes": 4, "fifo": 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--long-words", type=int, default=21_000)
    p.add_argument("--timeout", type=float, default=600, help="bound of each job, seconds")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    from fakes.server_process import FakeServerProcess

    from maie import submit

    info_before = c.machine()
    print(f"b7: {c.machine_line(info_before)}", flush=True)
    latency: dict[tuple[str, int], list[float]] = {(m, n): [] for m in MODES for n in (0, 1, 10)}
    long_chunks = 0
    with c.temp_dir("maie-b7-") as tmp, c.bench_redis(), c.Procs() as procs:
        fake = FakeServerProcess(name="bench", model=MODEL)
        procs.enter_context(fake)
        fake.faults({"kind": "delay", "seconds": DELAY})
        enhance = c.start_server_pools(procs, fake.base_url, MODEL, tmp)
        short_text = c.transcript(20, words_per_line=12, seed=5)[:1500]

        def run(mode: str, behind: int, seed: int) -> float:
            settings = c.bench_settings(short_job_max_chunks=MODES[mode])
            longs = [
                submit(c.transcript(a.long_words // 14, words_per_line=12, seed=seed + i), settings=settings)
                for i in range(behind)
            ]
            started = time.perf_counter()
            job = submit(short_text, settings=settings)
            result = job.wait(timeout=a.timeout)
            seconds = time.perf_counter() - started
            if result.status != "SUCCESS":
                raise SystemExit(f"b7: short job {result.status}: {result.error}")
            for long in longs:
                if (r := long.wait(timeout=a.timeout)).status != "SUCCESS":
                    raise SystemExit(f"b7: long job {r.status}: {r.error}")
            return seconds

        run("lanes", 0, 1)  # warm-up
        for r in range(a.repeats):
            for mode in MODES:
                for behind in (0, 1, 10):
                    seconds = run(mode, behind, seed=1000 * r + 100 * behind)
                    latency[(mode, behind)].append(seconds)
                    print(
                        f"b7: repeat {r + 1}: {mode} behind {behind:2d} long: {seconds:.2f} s · "
                        f"load {c.load_average()}",
                        flush=True,
                    )
        long_text = c.transcript(a.long_words // 14, words_per_line=12)
        long_chunks = len(c.chunk_texts(long_text, c.bench_settings()))
        c.check_alone()
        concurrency = c.pool_concurrency(enhance)

    lines = report(a, concurrency, long_chunks, latency, info_before)
    print("\n".join(lines))
    if not a.no_record:
        c.record("B7 head of line", lines, info_before)
        print(f"b7: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace,
    concurrency: str,
    long_chunks: int,
    latency: dict[tuple[str, int], list[float]],
    info_before: dict[str, Any],
) -> list[str]:
    med = {k: c.median(v) for k, v in latency.items()}
    ratio = {k: med[k] / med[(k[0], 0)] for k in med}
    ok = ratio[("lanes", 1)] <= TARGET
    lines = [
        f"- server: tests/fakes/server.py, every request answered after {DELAY} s; pools: "
        f"scripts/start-worker.sh enhance (threads, concurrency {concurrency}) and summary",
        f"- short job: 1,500 characters (1 chunk); long jobs: {a.long_words:,} words ({long_chunks} chunks) "
        f"each; every job enhanced and summarised; {a.repeats} repeats, medians",
        "",
        "| mode | alone s | behind 1 long s | ÷ alone | behind 10 long s | ÷ alone |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, value in MODES.items():
        lines.append(
            f"| {mode} (SHORT_JOB_MAX_CHUNKS={value}) | {med[(mode, 0)]:.2f} | {med[(mode, 1)]:.2f} | "
            f"{ratio[(mode, 1)]:.2f} | {med[(mode, 10)]:.2f} | {ratio[(mode, 10)]:.2f} |"
        )
    lines += [
        "",
        f"- **short job behind one long job, with lanes: {ratio[('lanes', 1)]:.2f}× its latency alone** "
        f"(first in, first out: {ratio[('fifo', 1)]:.2f}×) · target ≤ {TARGET} → **{c.verdict(ok)}**",
        f"- load average at the end: {c.load_average()} (before: {info_before['load']})",
    ]
    if not ok:
        lines.append(
            "- why missed: the short job's chunk waits for a free slot of the enhance pool, and its "
            "summary for one of the summary pool, each up to one request of the long jobs (0.5 s here)"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
