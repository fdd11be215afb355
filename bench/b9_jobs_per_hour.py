"""B9 · jobs per hour: a fixed pool on the development model, in the quickstart's configuration.

    .venv/bin/python bench/b9_jobs_per_hour.py [--jobs 4] [--words 250] [--no-record]

The work: N real AMI excerpts (raw ASR text, ../shared/data/enhancement_dev.jsonl, the first
`--words` words of N meetings), each a whole job: enhancement of its chunks, then a
`meeting_notes` summary (schema-valid JSON), all N submitted at once.

  maie    both pools as scripts/quickstart.sh starts them (scripts/start-worker.sh enhance|summary,
          LLM_BACKEND=local_vllm, the development model in each pool's own engine, the quickstart's
          limits); jobs per hour = N / (first submit → last result)
  direct  one process with the same two engines (MAIE's backends built from the same settings)
          doing the same LLM work through the same functions, without Celery or Redis: every job's
          chunks at once in threads (enhance_chunk_text), then each job's summary (summarize_text),
          the jobs at once

Pinning, the same for both: the engines' compute threads on CPU 0 (VLLM_CPU_OMP_THREADS_BIND), the
pools or the direct process on CPU 1; Redis (shared) is not pinned. Needs the development model
(scripts/make-dev-model.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common as c

MODEL = c.ROOT / "models" / "smollm2-135m-instruct"
TEMPLATE = "meeting_notes"
# scripts/quickstart.sh's settings for the development model.
QUICKSTART = {
    "LLM_BACKEND": "local_vllm",
    "LLM_ENHANCE__MODEL": str(MODEL),
    "LLM_SUM__MODEL": str(MODEL),
    "LLM_ENHANCE__MAX_MODEL_LEN": "2048",
    "LLM_SUM__MAX_MODEL_LEN": "8192",
    "LLM_ENHANCE__MAX_NUM_SEQS": "16",
    "LLM_SUM__MAX_NUM_SEQS": "4",
    "LLM_SUM__MAX_TOKENS": "768",
    "LLM_ENHANCE__ENFORCE_EAGER": "true",
    "LLM_SUM__ENFORCE_EAGER": "true",
    "CHUNK_MAX_TOKENS": "256",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # Greedy decoding (the quickstart samples): both paths then write the same replies, so the same
    # tokens, and the ratio compares the orchestration, not two draws of reply lengths.
    "LLM_ENHANCE__TEMPERATURE": "0",
    "LLM_SUM__TEMPERATURE": "0",
}


def excerpts(n: int, words: int) -> list[str]:
    """The first `words` words of the first `n` meetings, as raw ASR text."""
    texts = []
    with open(c.ROOT.parent / "shared" / "data" / "enhancement_dev.jsonl") as f:
        for line in f:
            raw = str(json.loads(line)["raw"]).split()
            if len(raw) >= words:
                texts.append(" ".join(raw[:words]))
            if len(texts) == n:
                return texts
    raise SystemExit(f"b9: fewer than {n} meetings of {words} words in the data")


def direct_child(a: argparse.Namespace) -> int:
    """The direct way: MAIE's LLM functions on MAIE's backends, in this one process."""
    import os

    from maie.backends import get_backend
    from maie.enhance import enhance_chunk_text
    from maie.settings import Settings
    from maie.summary import summarize_text
    from maie.templates import load_template

    os.environ.update(QUICKSTART)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    texts = json.loads(Path(a.texts).read_text())
    t0 = time.monotonic()
    enhance, summary = get_backend("enhance", s), get_backend("summary", s)
    loaded = time.monotonic() - t0
    template = load_template(TEMPLATE, s.templates_dir)

    def one_job(chunks: list[str], pool: ThreadPoolExecutor) -> dict[str, Any]:
        begun = time.monotonic()
        futures = [
            pool.submit(enhance_chunk_text, enhance, i, t, s.llm_enhance, s.enhance_max_edit_rate)
            for i, t in enumerate(chunks)
        ]
        enhanced = [f.result() for f in futures]
        enhance_seconds = time.monotonic() - begun
        outcome = summarize_text(summary, template, "\n".join(e.text for e in enhanced), s.llm_sum)
        return {
            "chunks": len(chunks),
            "summary_keys": sorted(outcome.data),
            "completion_tokens": sum(e.completion_tokens for e in enhanced) + outcome.completion_tokens,
            "enhance_seconds": enhance_seconds,
            "summary_seconds": outcome.seconds,
        }

    started = time.monotonic()
    # Threads enough for every chunk and job at once: the engines batch them as the pools' would.
    with ThreadPoolExecutor(64) as chunk_pool, ThreadPoolExecutor(len(texts)) as job_pool:
        done = list(job_pool.map(lambda chunks: one_job(chunks, chunk_pool), texts))
    seconds = time.monotonic() - started
    Path(a.out).write_text(json.dumps({"seconds": seconds, "load": loaded, "jobs": done}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--words", type=int, default=250)
    c.add_engine_args(p, timeout=1200)
    p.add_argument("--texts", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.direct_child:
        return direct_child(a)
    if not (MODEL / "config.json").exists():
        raise SystemExit("b9: the development model is not built: scripts/make-dev-model.sh")

    from maie import submit

    feeder = c.ORCHESTRATION_CPUS
    c.pin_self(feeder)
    info = c.machine()
    print(f"b9: {c.machine_line(info)}", flush=True)
    meetings = excerpts(a.jobs, a.words)
    with c.temp_dir("maie-b9-") as tmp, c.bench_redis(), c.Procs() as procs:
        settings = c.bench_settings(
            llm_backend="local_vllm",
            llm_enhance={"model": str(MODEL), "max_model_len": 2048},
            llm_sum={"model": str(MODEL), "max_model_len": 8192, "max_tokens": 768},
            chunk_max_tokens=256,
        )
        chunked = [c.chunk_texts(t, settings) for t in meetings]
        texts = tmp / "texts.json"
        texts.write_text(json.dumps(chunked))

        # 1. direct: its own process, stopped before the pools start.
        out = tmp / "direct.json"
        cmd = [
            c.PYTHON,
            str(Path(__file__).resolve()),
            "--direct-child",
            "--texts",
            str(texts),
            "--out",
            str(out),
        ]
        child = procs.start(
            "direct", c.pinned(cmd, feeder), env=c.clean_env(**c.engine_env(a.engine_cores)), log_dir=tmp
        )
        c.wait_until("direct run", lambda: not child.alive(), a.timeout + 300)
        child.stop()
        if child.proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"direct run failed ({child.proc.returncode}):\n{child.log(4000)}")
        direct = json.loads(out.read_text())
        print(f"b9: direct {a.jobs} jobs in {direct['seconds']:.1f} s · load {c.load_average()}", flush=True)

        # 2. MAIE: the quickstart's pools.
        env = c.pool_env(**QUICKSTART, **c.engine_env(a.engine_cores))
        c.start_pool(procs, "enhance", env, tmp, cpus=feeder, timeout=600)
        c.start_pool(procs, "summary", env, tmp, cpus=feeder, timeout=600)
        c.check_alone()
        started = time.monotonic()
        jobs = [submit(t, template_id=TEMPLATE, settings=settings) for t in meetings]
        results = [j.wait(timeout=a.timeout) for j in jobs]
        seconds = time.monotonic() - started
        failed = [r.job_id for r in results if r.status != "SUCCESS" or not r.summary]
        if failed:
            raise RuntimeError(f"b9: jobs without a summary: {failed}")
        degraded = sum(ch.degraded for r in results for ch in r.chunks)
        maie_tokens = sum(m.completion_tokens for r in results for m in r.metrics.values())
        # Per stage, mean over jobs: the enhance stage's wall time, the summary call's duration.
        maie_stages = [
            sum(r.metrics[stage].wall_seconds for r in results) / len(results)
            for stage in ("enhance", "summary")
        ]
        print(f"b9: maie {a.jobs} jobs in {seconds:.1f} s · load {c.load_average()}", flush=True)

    n_chunks = sum(len(ch) for ch in chunked)
    direct_tokens = sum(j["completion_tokens"] for j in direct["jobs"])
    direct_stages = [
        sum(j[f"{st}_seconds"] for j in direct["jobs"]) / len(direct["jobs"]) for st in ("enhance", "summary")
    ]
    ratio = direct["seconds"] / seconds
    lines = [
        f"- work: {a.jobs} jobs, each the first {a.words} words of an AMI meeting as raw ASR text "
        f"({n_chunks} chunks in all at CHUNK_MAX_TOKENS=256), enhanced then summarised with "
        f"`{TEMPLATE}`, all submitted at once",
        "- configuration: scripts/quickstart.sh's (LLM_BACKEND=local_vllm, the development model "
        "SmolLM2-135M-Instruct in each pool's own engine, eager, enhance context 2048 × 16 sequences, "
        "summary context 8192 × 4 sequences, summary max_tokens 768), with greedy decoding in both paths "
        "so that both generate the same replies",
        f"- pinning: both engines' compute threads on CPU {a.engine_cores}; the pools and the direct "
        f"process on CPU {feeder}; Redis (shared) not pinned",
        "",
        "| path | jobs | wall s | jobs per hour | tokens generated | tokens/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| direct: the same LLM functions and engines in one process | {a.jobs} | "
        f"{direct['seconds']:.1f} | {a.jobs / direct['seconds'] * 3600:.0f} | {direct_tokens} | "
        f"{direct_tokens / direct['seconds']:.1f} |",
        f"| MAIE: submit → both pools → result | {a.jobs} | {seconds:.1f} | {a.jobs / seconds * 3600:.0f} | "
        f"{maie_tokens} | {maie_tokens / seconds:.1f} |",
        "",
        f"- per job, mean: enhance stage {maie_stages[0]:.1f} s through MAIE, "
        f"{direct_stages[0]:.1f} s direct; summary call {maie_stages[1]:.1f} s through MAIE, "
        f"{direct_stages[1]:.1f} s direct",
        f"- **MAIE {a.jobs / seconds * 3600:.0f} jobs per hour; MAIE ÷ direct = {ratio:.2f}** in wall time, "
        f"{(maie_tokens / seconds) / (direct_tokens / direct['seconds']):.2f} in tokens generated per second "
        f"({degraded} of {n_chunks} chunks kept raw by the faithfulness check: the 135M model, "
        "docs/QUALITY.md)",
        f"- load average at the end: {c.load_average()}",
    ]
    print("\n".join(lines))
    if not a.no_record:
        c.record("B9 jobs per hour", lines, info)
        print(f"b9: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
