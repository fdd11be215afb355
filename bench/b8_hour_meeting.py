"""B8 · an hour-long meeting: enhanced through MAIE (chunks in parallel) against one request.

    .venv/bin/python bench/b8_hour_meeting.py [--step-ms 5] [--per-seq-ms 0.05] [--repeats 2] [--no-record]

The meeting: two real AMI meetings back to back as raw ASR text (../shared/data/enhancement_dev.jsonl,
ES2008d and ES2003c, lowercase and unpunctuated: 9,984 words, about 70 minutes of speech).

The server: the simulated accelerator (tests/fakes/server.py --accelerator STEP_MS,PER_SEQ_MS): a
GPU-like engine doing continuous batching, one token (a word of its reply, which repeats the input)
per running request every STEP_MS + PER_SEQ_MS × running milliseconds, using almost no CPU. A CPU
vLLM server cannot stand in here: the development model's context (8k tokens) does not hold the
meeting in one request at all, and on two cores a batch costs nearly as much as its requests one by
one, which no GPU does.

  direct    the whole meeting as one enhancement request (MAIE's own prompt), max_tokens enough for
            the reply
  maie      one enhance-only job: submit → chunks (CHUNK_MAX_TOKENS, default 512) → enhance pool
            (scripts/start-worker.sh enhance: threads, concurrency 16) → the same server

Pinning as in B6: the simulated accelerator on CPU 0; the worker pools, this process and its
direct client on CPU 1; Redis (shared) not pinned. Reported: wall time of each (median of the
repeats) and direct ÷ MAIE. Target: MAIE ≥ 4× faster.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import common as c

TARGET = 4.0
MODEL = "sim-gpu"
MEETINGS = ("qmsum-ES2008d-enh-t0-804", "qmsum-ES2003c-enh-t20-115")


def meeting() -> str:
    items = {}
    with open(c.ROOT.parent / "shared" / "data" / "enhancement_dev.jsonl") as f:
        for line in f:
            item = json.loads(line)
            items[item["id"]] = item["raw"]
    return "\n".join(items[m] for m in MEETINGS) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--step-ms", type=float, default=5.0)
    p.add_argument("--per-seq-ms", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    from fakes.server_process import FakeServerProcess

    from maie.enhance import build_messages

    c.pin_self(c.ORCHESTRATION_CPUS)
    info_before = c.machine()
    print(f"b8: {c.machine_line(info_before)}", flush=True)
    text = meeting()
    words = len(text.split())
    maie_s: list[float] = []
    direct_s: list[float] = []
    with c.temp_dir("maie-b8-") as tmp, c.bench_redis(), c.Procs() as procs:
        fake = FakeServerProcess(
            name="sim", model=MODEL, accelerator=f"{a.step_ms},{a.per_seq_ms},256", max_model_len=65536
        )
        procs.enter_context(fake)
        c.pin_pid(fake.pid, c.ENGINE_CPUS)
        enhance = c.start_server_pools(procs, fake.base_url, MODEL, tmp, cpus=c.ORCHESTRATION_CPUS)
        settings = c.bench_settings()
        chunks = c.chunk_texts(text, settings)
        c.run_job(c.transcript(4, seed=3), settings, timeout=a.timeout)  # warm-up
        result: Any = None
        for r in range(a.repeats):
            seconds, result = c.run_job(text, settings, timeout=a.timeout)
            if result.status != "SUCCESS":
                raise SystemExit(f"b8: MAIE job {result.status}: {result.error}")
            maie_s.append(seconds)
            print(f"b8: repeat {r + 1}: MAIE {len(chunks)} chunks in {seconds:.1f} s", flush=True)
            run = c.direct_chat(
                fake.base_url, MODEL, [build_messages(text)], concurrency=1, max_tokens=2 * words,
                timeout=a.timeout,
            )  # fmt: skip
            direct_s.append(run.seconds)
            print(f"b8: repeat {r + 1}: one request in {run.seconds:.1f} s", flush=True)
        c.check_alone()
        concurrency = c.pool_concurrency(enhance)

    lines = report(a, words, len(chunks), concurrency, maie_s, direct_s, info_before)
    print("\n".join(lines))
    if not a.no_record:
        c.record("B8 hour-long meeting", lines, info_before)
        print(f"b8: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace,
    words: int,
    chunks: int,
    concurrency: str,
    maie_s: list[float],
    direct_s: list[float],
    info_before: dict[str, Any],
) -> list[str]:
    maie, direct = c.median(maie_s), c.median(direct_s)
    ratio = direct / maie
    ok = ratio >= TARGET
    return [
        f"- meeting: AMI {' + '.join(MEETINGS)}, raw ASR text, {words:,} words; MAIE made {chunks} chunks "
        "(CHUNK_MAX_TOKENS 512)",
        f"- server: simulated accelerator (tests/fakes/server.py --accelerator {a.step_ms},{a.per_seq_ms}): "
        f"{a.step_ms} ms per decode step + {a.per_seq_ms} ms per running request, one token per step each",
        f"- MAIE: one enhance-only job → enhance pool (threads, concurrency {concurrency}); direct: the "
        "whole meeting as one request with MAIE's prompt",
        f"- pinning: the simulated accelerator on CPU {c.ENGINE_CPUS}; pools, bench process and direct "
        f"client on CPU {c.ORCHESTRATION_CPUS}; Redis (shared) not pinned",
        "",
        "| path | wall s (median) | every run |",
        "|---|---:|---|",
        f"| MAIE, {chunks} chunks in parallel | {maie:.1f} | {', '.join(f'{x:.1f}' for x in maie_s)} |",
        f"| one request | {direct:.1f} | {', '.join(f'{x:.1f}' for x in direct_s)} |",
        "",
        f"- **one request ÷ MAIE = {ratio:.1f}×** · target ≥ {TARGET:.0f}× → **{c.verdict(ok)}**",
        f"- load average at the end: {c.load_average()} (before: {info_before['load']})",
    ]


if __name__ == "__main__":
    sys.exit(main())
