"""B6 · simulated accelerator: does the pipeline keep a fast engine as busy as direct clients do?

    .venv/bin/python bench/b6_sim_accelerator.py [--concurrency 16,64,256] [--workers 2,4]
        [--step-ms 30] [--per-seq-ms 0.05] [--waves 3] [--words 40] [--no-record]

The LLM is tests/fakes/server.py with `--accelerator STEP_MS,PER_SEQ_MS`: a simulated GPU doing
continuous batching (each step emits one token per running request and takes STEP_MS + PER_SEQ_MS ×
running ms), which costs almost no CPU. What is measured is then the orchestration alone: whether
MAIE keeps as many requests in the engine as the same number of direct clients, apart from any
contention for the CPU with the engine.

For each worker count W and concurrency C, in one run:
  direct  N = waves × C chunk requests (MAIE's own enhancement messages) from C concurrent
          `openai` clients
  maie    one enhance-only job of the same N chunks: submit → W enhance worker processes of C / W
          threads each (scripts/start-worker.sh enhance -c C/W) → the same server; the chord body
          on one summary pool
  direct  again; the ratio is MAIE tokens/s over the mean of the two direct phases
Tokens are the accelerator's own counter; the mean batch (running requests per step) shows how
full MAIE kept it. Pinning: the simulated accelerator on CPU 0, the worker processes and this
process (the direct clients, the submission) on CPU 1; Redis is the machine's shared service and
is not pinned. Target: ≥ 0.95 at 64 concurrent requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import common as c
from fakes.process import ManagedProcess

TARGET = 0.95
MODEL = "sim-accelerator"
ENGINE_CPU = c.ENGINE_CPUS
ORCHESTRATION_CPU = c.ORCHESTRATION_CPUS


@dataclass
class Phase:
    seconds: float
    tokens: float
    steps: float
    batch: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def mean_batch(self) -> float:
        return self.batch / self.steps if self.steps else 0.0


class Counters:
    def __init__(self, url: str) -> None:
        self.url = url

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in c.http_get(f"{self.url}/metrics", timeout=10).splitlines():
            if line.startswith("fake:accelerator_"):
                name, value = line.split(" ")
                out[name] = float(value)
        return out

    def phase(self, run: Any) -> Phase:
        before = self.read()
        seconds = run()
        time.sleep(0.2)
        after = self.read()

        def d(name: str) -> float:
            return after[f"fake:accelerator_{name}_total"] - before[f"fake:accelerator_{name}_total"]

        return Phase(seconds, d("tokens"), d("steps"), d("batch"))


def start_enhance_pools(
    procs: c.Procs, n: int, threads: int, env: dict[str, str], tmp: Any
) -> list[ManagedProcess]:
    pools = []
    for i in range(n):
        log_dir = tmp / f"enhance-{threads}-{i}"
        penv = {**env, "LOG_DIR": str(log_dir / "logs")}
        cmd = [
            "taskset", "-c", ORCHESTRATION_CPU,
            "bash", str(c.ROOT / "scripts" / "start-worker.sh"), "enhance",
            "-c", str(threads), "-n", f"b6-enhance-{os.getpid()}-{threads}-{i}@%h",
        ]  # fmt: skip
        proc = procs.start(f"enhance-{threads}-{i}", cmd, env=penv, log_dir=log_dir, cwd=c.ROOT)
        pools.append(proc)
    for proc in pools:
        proc.wait_logged(" ready.", 180, poll=0.25)
    return pools


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", default="16,64,256")
    p.add_argument("--workers", default="2,4")
    p.add_argument("--step-ms", type=float, default=30.0)
    p.add_argument("--per-seq-ms", type=float, default=0.05)
    p.add_argument("--waves", type=int, default=3, help="chunks per phase = waves × concurrency")
    p.add_argument("--words", type=int, default=40, help="words per chunk (one turn each)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)
    concurrencies = [int(x) for x in a.concurrency.split(",")]
    worker_counts = [int(x) for x in a.workers.split(",")]

    from fakes.server_process import FakeServerProcess

    from maie.enhance import build_messages

    os.sched_setaffinity(0, {int(ORCHESTRATION_CPU)})
    info_before = c.machine()
    print(f"b6: {c.machine_line(info_before)}", flush=True)
    rows: list[tuple[int, int, int, Phase, Phase, Phase]] = []
    with c.temp_dir("maie-b6-") as tmp, c.bench_redis(), c.Procs() as procs:
        fake = FakeServerProcess(name="sim", model=MODEL, accelerator=f"{a.step_ms},{a.per_seq_ms},1024")
        procs.enter_context(fake)
        c.pin_pid(fake.pid, ENGINE_CPU)
        counters = Counters(fake.url)
        env = c.pool_env(
            LLM_BACKEND="vllm_server",
            LLM_SERVER__ENHANCE_BASE_URL=fake.base_url,
            LLM_SERVER__ENHANCE_MODEL_NAME=MODEL,
        )
        summary = c.start_pool(procs, "summary", env, tmp)
        c.pin_pid(summary.pid, ORCHESTRATION_CPU)
        settings = c.bench_settings(chunk_max_tokens=a.words * 2)
        for workers in worker_counts:
            for conc in concurrencies:
                threads = max(1, conc // workers)
                n = a.waves * conc
                text = c.transcript(n, words_per_line=a.words, seed=conc * 10 + workers)
                chunks = c.chunk_texts(text, settings)
                if len(chunks) != n:
                    raise SystemExit(f"expected {n} chunks, chunking made {len(chunks)}")
                conversations = [build_messages(t) for t in chunks]
                pools = start_enhance_pools(procs, workers, threads, env, tmp)
                # Warm-up: every thread's connection and first task.
                c.run_job(c.transcript(conc, words_per_line=5, seed=7), settings, timeout=a.timeout)

                def direct(conv: list[Any] = conversations, k: int = conc) -> float:
                    return c.direct_chat(fake.base_url, MODEL, conv, concurrency=k, max_tokens=1024).seconds

                def maie(t: str = text) -> float:
                    return float(c.run_job(t, settings, timeout=a.timeout)[0])

                d1 = counters.phase(direct)
                m = counters.phase(maie)
                d2 = counters.phase(direct)
                rows.append((workers, conc, n, d1, m, d2))
                ratio = m.rate / ((d1.rate + d2.rate) / 2)
                print(
                    f"b6: {workers} workers × {threads} threads, {conc} concurrent, {n} chunks: direct "
                    f"{d1.rate:.0f}/{d2.rate:.0f} tok/s (batch {d1.mean_batch:.0f}/{d2.mean_batch:.0f}), "
                    f"maie {m.rate:.0f} tok/s (batch {m.mean_batch:.0f}) → {ratio:.2f} · "
                    f"load {c.load_average()}",
                    flush=True,
                )
                for proc in pools:
                    proc.stop()
        c.check_alone()

    lines = report(a, rows, info_before)
    print("\n".join(lines))
    if not a.no_record:
        c.record("B6 simulated accelerator", lines, info_before)
        print(f"b6: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace, rows: list[tuple[int, int, int, Phase, Phase, Phase]], info: dict[str, Any]
) -> list[str]:
    lines = [
        f"- LLM: tests/fakes/server.py --accelerator {a.step_ms},{a.per_seq_ms} (a step every "
        f"{a.step_ms} ms + {a.per_seq_ms} ms per running request, one token per request per step), "
        f"pinned to CPU {ENGINE_CPU}; worker processes, the direct clients and the submission pinned to CPU "
        f"{ORCHESTRATION_CPU}; Redis {c.REDIS_URL} (the machine's shared server, not pinned)",
        f"- work per phase: {a.waves} × C one-turn chunks of about {a.words} words (MAIE's enhancement "
        "messages); the fake's reply is the chunk, punctuated, so each request is about as many tokens "
        "as words; tokens counted by the accelerator",
        "- MAIE: W enhance worker processes (scripts/start-worker.sh enhance -c C/W, threads pool), one "
        "summary pool for the chord body; direct: C concurrent openai clients; phases direct, MAIE, direct",
        "",
        "| workers | concurrent | chunks | direct tok/s (mean batch) | MAIE tok/s (mean batch) "
        "| MAIE ÷ direct |",
        "|---:|---:|---:|---|---|---:|",
    ]
    at64: list[float] = []
    for workers, conc, n, d1, m, d2 in rows:
        direct_rate = (d1.rate + d2.rate) / 2
        ratio = m.rate / direct_rate
        if conc == 64:
            at64.append(ratio)
        lines.append(
            f"| {workers} | {conc} | {n} | {d1.rate:.0f} / {d2.rate:.0f} ({d1.mean_batch:.0f} / "
            f"{d2.mean_batch:.0f}) | {m.rate:.0f} ({m.mean_batch:.0f}) | {ratio:.2f} |"
        )
    if at64:
        ok = min(at64) >= TARGET
        lines += [
            "",
            f"- **at 64 concurrent requests: {', '.join(f'{r:.2f}' for r in at64)}** · target ≥ {TARGET:.2f} "
            f"→ **{c.verdict(ok)}**",
        ]
    lines.append(f"- load average at the end: {c.load_average()} (before: {info['load']})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
