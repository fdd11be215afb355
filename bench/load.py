"""Load under faults: every job completes, none is lost, each result equals its fault-free result.

    .venv/bin/python bench/load.py [--jobs 200] [--seed 7] [--timeout 900] [--no-record]
                                   [--endpoint-outage 180] [--redis-kills 3]

Starts its own fake OpenAI servers (A: enhancement, B: summary) and `celery -A maie worker`
processes for both queues, on Redis DB 14 of 127.0.0.1:6379 (BENCH_REDIS to change it), claimed the
way every benchmark of bench/ claims it (bench/common.py): refused while another benchmark runs,
flushed before and after, and the figures are void if another process took it over meanwhile.
Then it submits the same jobs of mixed sizes twice:

1. fault-free: the reference result of each input;
2. with faults on both servers (5 % of requests answer 500, 2 % are delayed past the request
   timeout) while the enhancement worker is SIGKILLed a third of the way through and restarted;
   with --endpoint-outage S, the enhancement server also stops at that point and comes back on the
   same port S seconds later (a vLLM server restart), and the connection attempts it missed
   meanwhile are counted by a listener that resets them; with --redis-kills N, the Redis of
   BENCH_REDIS (a redis-server of the bench's own, started with --appendonly yes) is SIGKILLed N
   times, 40 s apart, and started again on its port and append-only file.

The run in bench/RESULTS.md with every fault at once:

    redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
        --dir /tmp/bench-redis &
    BENCH_REDIS=redis://127.0.0.1:6391/0 .venv/bin/python bench/load.py --jobs 200 \
        --endpoint-outage 180 --redis-kills 3 --timeout 1800

Every job of the second run must succeed with the same enhanced text and the same summary as in
the first. Prints a summary and appends a dated line to bench/RESULTS.md under "## Load
(reliability)". Exit code 0 when every job passed, 1 otherwise. Bounded by --timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# Before `import maie`: points this process's Celery app at the benchmarks' Redis DB (BENCH_REDIS,
# default DB 14), which every benchmark claims in turn (bench_redis) and checks it kept (check_alone).
import common  # noqa: E402
import redis  # noqa: E402
from fakes.outage import ResettingListener  # noqa: E402
from fakes.process import ManagedProcess, free_port  # noqa: E402
from fakes.server_process import FakeServerProcess  # noqa: E402

from maie import Job, submit  # noqa: E402
from maie.settings import Settings, load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = "## Load (reliability)"
REQUEST_TIMEOUT = 2.0
VISIBILITY_TIMEOUT = 15
WORDS = (
    "budget plan design remote control battery button colour yellow market price user test team "
    "meeting decide agree idea screen speech voice report week month client deadline prototype "
    "material rubber plastic shape curve logo brand sales target cost profit risk review"
).split()
SPEAKERS = ("Project Manager", "Marketing", "Industrial Designer", "User Interface")


# -- inputs --------------------------------------------------------------------------------------


def make_inputs(n: int, seed: int) -> list[str]:
    """`n` distinct transcripts: mostly short, some medium, a few long (many chunks)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choices(("short", "medium", "long"), weights=(6, 3, 1))[0]
        lines = {"short": rng.randint(2, 8), "medium": rng.randint(15, 40), "long": rng.randint(80, 160)}[
            size
        ]
        text = []
        for j in range(lines):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 18)))
            text.append(f"{SPEAKERS[(i + j) % len(SPEAKERS)]}: job {i} line {j} {words}")
        out.append("\n".join(text) + "\n")
    return out


# -- processes -----------------------------------------------------------------------------------


class WorkerProc(ManagedProcess):
    """`celery -A maie worker -Q <queue>`, restarted after a kill as a new generation: a node name
    and an output file of its own (worker-<queue>-<generation>.out in `log_dir`)."""

    def __init__(self, queue: str, concurrency: int, env: dict[str, str], log_dir: Path) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.generation = 0
        super().__init__(f"worker {queue}", self._command(), self._output(), env=env, cwd=log_dir)

    def _command(self) -> list[str]:
        celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or "celery"
        return [
            celery, "-A", "maie", "worker", "-Q", self.queue, "-c", str(self.concurrency),
            "-n", f"bench-{self.queue}-{self.generation}-{os.getpid()}@%h",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip",
        ]  # fmt: skip

    def _output(self) -> Path:
        return self.log_dir / f"worker-{self.queue}-{self.generation}.out"

    def start(self, ready_timeout: float = 90) -> Self:
        """Start this generation; returns once it is ready."""
        self.cmd, self.log_path = self._command(), self._output()
        return super().start().wait_logged(" ready.", ready_timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: the next start is a new generation."""
        self.stop(signal.SIGKILL)
        self.generation += 1

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"worker-{self.queue}-*.out"))
        )


# -- runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    wall: float = 0.0
    chunks: int = 0
    outcomes: dict[int, Any] = field(default_factory=dict)  # input index -> JobResult
    latencies: list[float] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def run_jobs(
    name: str,
    inputs: list[str],
    settings: Settings,
    deadline: float,
    on_progress: Any = None,
) -> Run:
    """Submit every input, then follow every job to its end (or the deadline)."""
    run = Run(name)
    started = time.monotonic()
    jobs: dict[int, tuple[Job, float]] = {}
    for i, text in enumerate(inputs):
        jobs[i] = (submit(text, settings=settings), time.monotonic())
    run.chunks = sum(job.store.meta(job.id).n_chunks for job, _ in jobs.values())
    pending = dict(jobs)
    while pending and time.monotonic() < deadline:
        for i, (job, submitted) in list(pending.items()):
            with contextlib.suppress(redis.ConnectionError):
                result = job.result()
                if result is not None:
                    run.outcomes[i] = result
                    run.latencies.append(time.monotonic() - submitted)
                    del pending[i]
        if on_progress is not None:
            on_progress(jobs, run)
        time.sleep(0.25)
    run.missing = sorted(pending)
    run.wall = time.monotonic() - started
    return run


def kill_and_restart_redis(url: str) -> float:
    """SIGKILL the redis-server behind `url`, start it again on its port, directory and append-only
    file; returns the seconds until it answered again."""
    client = redis.Redis.from_url(url)
    info = client.info("server")
    directory = client.config_get("dir")["dir"]
    fsync = client.config_get("appendfsync")["appendfsync"]
    client.close()
    os.kill(int(info["process_id"]), signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(1)
    cmd = ["redis-server", "--port", str(info["tcp_port"]), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "yes", "--appendfsync", fsync, "--dir", directory]
    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    probe = redis.Redis.from_url(url, socket_connect_timeout=1)
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
            if probe.ping():
                probe.close()
                return time.monotonic() - killed_at
        time.sleep(0.1)


def chunks_done(jobs: dict[int, tuple[Job, float]]) -> int:
    return sum(job.store.enhanced_count(job.id) for job, _ in jobs.values())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def record(line: str) -> None:
    """Add `line` at the end of the "## Load (reliability)" section of bench/RESULTS.md."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        if not text:
            text = "# Benchmark results\n"
        lines = text.rstrip("\n").split("\n")
        if HEADING not in lines:
            lines += ["", HEADING, "", line]
        else:
            at = lines.index(HEADING) + 1
            end = next((k for k in range(at, len(lines)) if lines[k].startswith("## ")), len(lines))
            while end > at and not lines[end - 1].strip():
                end -= 1
            lines.insert(end, line)
        f.seek(0)
        f.truncate()
        f.write("\n".join(lines) + "\n")


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the whole bench")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument(
        "--endpoint-outage",
        type=float,
        default=0,
        help="seconds the enhancement server is down mid-run (0: it stays up)",
    )
    parser.add_argument(
        "--redis-kills",
        type=int,
        default=0,
        help="SIGKILL the Redis of BENCH_REDIS this many times mid-run and start it again on its port "
        "and append-only file (a redis-server of its own, started with --appendonly yes)",
    )
    args = parser.parse_args(argv)
    if args.redis_kills and "BENCH_REDIS" not in os.environ:
        parser.error("--redis-kills needs BENCH_REDIS pointing at a redis-server of the bench's own")
    deadline = time.monotonic() + args.timeout
    host = common.machine_line()  # date, machine and load, before the bench adds its own load

    with common.bench_redis():
        return run(args, deadline, host)


def run(args: argparse.Namespace, deadline: float, host: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="maie-load-"))
    inputs = make_inputs(args.jobs, args.seed)
    workers: list[WorkerProc] = []
    # A fixed port for the enhancement server: after an outage it comes back on the same one.
    a_port = free_port()
    outage: dict[str, Any] = {}
    with contextlib.ExitStack() as servers:
        a = FakeServerProcess(
            port=a_port, name="A", model="enhance-model", api_key="sk-bench-enhance"
        ).start()
        servers.callback(lambda: outage["server"].stop() if "server" in outage else a.stop())
        b = servers.enter_context(
            FakeServerProcess(name="B", model="summary-model", api_key="sk-bench-summary")
        )
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "TASK_", "QUEUE_", "CHUNK_"))
            },
            "CELERY_BROKER_URL": common.REDIS_URL,
            "CELERY_RESULT_BACKEND": common.REDIS_URL,
            "LLM_BACKEND": "vllm_server",
            "LLM_SERVER__ENHANCE_BASE_URL": a.base_url,
            "LLM_SERVER__ENHANCE_API_KEY": "sk-bench-enhance",
            "LLM_SERVER__ENHANCE_MODEL_NAME": "enhance-model",
            "LLM_SERVER__SUMMARY_BASE_URL": b.base_url,
            "LLM_SERVER__SUMMARY_API_KEY": "sk-bench-summary",
            "LLM_SERVER__SUMMARY_MODEL_NAME": "summary-model",
            "LLM_SERVER__REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT),
            # Retries bounded by the default deadline (15 minutes), not by a count.
            "TASK_RETRY_BACKOFF_MAX": "2",
            "BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "QUEUE_MAX_DEPTH": "100000",
            "LOG_DIR": str(work / "logs"),
            "PYTHONUNBUFFERED": "1",
            # Redis kills can lose the last second of writes: the reconciler re-sends what went
            # missing after this much time without progress (30 minutes by default).
            **({"JOB_STALL_SECONDS": "60"} if args.redis_kills else {}),
        }
        settings = load_settings(
            env_file=None,
            celery_broker_url=common.REDIS_URL,
            celery_result_backend=common.REDIS_URL,
            chunk_max_tokens=128,
            queue_max_depth=100000,
        )
        try:
            enhance = WorkerProc("enhance", 8, env, work)
            summary = WorkerProc("summary", 4, env, work)
            workers += [enhance, summary]
            for w in workers:
                w.start()

            print(f"load: {args.jobs} jobs, fault-free run ...", flush=True)
            reference = run_jobs("fault-free", inputs, settings, deadline)

            print("load: the same jobs with faults and a worker SIGKILLed ...", flush=True)
            a.reset()
            b.reset()
            faults = [
                {"kind": "status", "status": 500, "probability": 0.05, "seed": args.seed},
                {"kind": "delay", "seconds": REQUEST_TIMEOUT + 2, "probability": 0.02, "seed": args.seed + 1},
            ]
            a.faults(faults)
            b.faults(faults)
            killed: dict[str, float] = {}
            redis_kills: list[float] = []

            def kill_once(jobs: dict[int, tuple[Job, float]], run: Run) -> None:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    faults_step(jobs, run)

            def faults_step(jobs: dict[int, tuple[Job, float]], run: Run) -> None:
                # Redis kills 40 s apart once the endpoint outage (or the worker kill) has begun.
                since = time.monotonic() - killed.get("at", time.monotonic())
                if killed and len(redis_kills) < args.redis_kills and since >= 20 + 40 * len(redis_kills):
                    redis_kills.append(kill_and_restart_redis(common.REDIS_URL))
                if not killed and chunks_done(jobs) >= run.chunks // 3:
                    if args.endpoint_outage:
                        outage["a_log"] = a.log()
                        a.stop()
                        outage["listener"] = ResettingListener(a_port)
                        outage["at"] = time.monotonic()
                    enhance.kill()
                    killed["at"] = time.monotonic()
                    enhance.start()
                    killed["restarted"] = time.monotonic() - killed["at"]
                if "listener" in outage and time.monotonic() - outage["at"] >= args.endpoint_outage:
                    listener = outage.pop("listener")
                    listener.close()
                    outage["attempts"] = listener.count
                    outage["server"] = FakeServerProcess(
                        port=a_port, name="A2", model="enhance-model", api_key="sk-bench-enhance"
                    ).start()
                    outage["server"].faults(faults)

            faulty = run_jobs("faults", inputs, settings, deadline, on_progress=kill_once)
            hits = {r["kind"]: 0 for r in faults}
            a_now = outage.get("server", a)
            for server in (a_now, b):
                for rule in server.fault_rules():
                    hits[rule["kind"]] += rule["hits"]
            requests = len(outage.get("a_log", [])) + len(a_now.log()) + len(b.log())
        finally:
            for w in workers:
                w.stop()
            if "listener" in outage:
                outage.pop("listener").close()

    logs = "\n".join(w.logs() for w in workers)
    retries = len(re.findall(r"; retry \d+ in ", logs))
    redelivered = len(re.findall(r"delivered again \(", logs))
    mismatched, failed = [], []
    for i in range(len(inputs)):
        ref, got = reference.outcomes.get(i), faulty.outcomes.get(i)
        if got is None or ref is None:
            continue
        if got.status != "SUCCESS" or ref.status != "SUCCESS":
            failed.append(i)
        elif (got.enhanced_text, got.summary) != (ref.enhanced_text, ref.summary):
            mismatched.append(i)
    lost = sorted(set(reference.missing) | set(faulty.missing))
    try:
        common.check_alone()  # nobody flushed the DB or ran another benchmark meanwhile
    except RuntimeError as exc:
        print(f"load: {exc}")
        return 1
    outage_done = not args.endpoint_outage or "attempts" in outage
    ok = (
        not (lost or failed or mismatched)
        and bool(killed)
        and outage_done
        and len(redis_kills) == args.redis_kills
    )
    completed = len(faulty.outcomes) - len(failed)
    verdict = "PASS" if ok else "FAIL"
    p50_ref, p95_ref = percentile(reference.latencies, 0.5), percentile(reference.latencies, 0.95)
    p50, p95 = percentile(faulty.latencies, 0.5), percentile(faulty.latencies, 0.95)
    n500, ndelay = hits.get("status", 0), hits.get("delay", 0)
    kill_note = "and restarted" if killed else "NOT (the run ended first)"
    summary_lines = [
        f"fault-free: {args.jobs} jobs, {reference.chunks} chunks in {reference.wall:.1f} s "
        f"({args.jobs / reference.wall:.1f} jobs/s, {reference.chunks / reference.wall:.1f} chunks/s), "
        f"latency p50 {p50_ref:.1f} s p95 {p95_ref:.1f} s",
        f"faults:     {args.jobs} jobs in {faulty.wall:.1f} s ({args.jobs / faulty.wall:.1f} jobs/s), "
        f"latency p50 {p50:.1f} s p95 {p95:.1f} s; {requests} LLM requests, {n500} answered 500, "
        f"{ndelay} delayed past the {REQUEST_TIMEOUT:g} s timeout; {retries} retries; "
        f"enhance worker SIGKILLed {kill_note}, {redelivered} tasks redelivered"
        + (
            f"; enhancement server down {args.endpoint_outage:g} s, "
            f"{outage.get('attempts', '?')} connection attempts while down"
            if args.endpoint_outage
            else ""
        )
        + (
            f"; Redis SIGKILLed {len(redis_kills)} of {args.redis_kills} times (append-only, fsync every "
            f"second), back in {', '.join(f'{t:.1f}' for t in redis_kills)} s"
            if args.redis_kills
            else ""
        ),
        f"outcome:    {completed}/{args.jobs} completed, {len(lost)} lost or unfinished, "
        f"{len(failed)} failed, {len(mismatched)} differ from the fault-free result -> {verdict}",
    ]
    print("\n".join(summary_lines))
    if lost or failed or mismatched:
        print(f"load: lost {lost[:10]} failed {failed[:10]} differ {mismatched[:10]}; logs in {work}")
    line = (
        f"- {host} · {args.jobs} jobs ({reference.chunks} chunks), "
        f"2 pools (enhance 8 threads, summary 4) · fault-free {reference.wall:.1f} s · with 5 % HTTP 500 "
        f"+ 2 % timeouts ({n500} + {ndelay} of {requests} requests, {retries} retries) and the enhance "
        f"worker SIGKILLed and restarted mid-run ({redelivered} redelivered)"
        + (
            f", enhancement server stopped for {args.endpoint_outage:g} s at the same moment and restarted "
            f"on its port ({outage.get('attempts', '?')} connection attempts while down)"
            if args.endpoint_outage
            else ""
        )
        + f": {faulty.wall:.1f} s, "
        f"p95 latency {p95:.1f} s · completed {completed}/{args.jobs}, lost {len(lost)}, "
        f"differing {len(mismatched)} → {verdict}"
    )
    if not args.no_record:
        record(line)
        print(f"load: recorded in {RESULTS.relative_to(ROOT)}")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
