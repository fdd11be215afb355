"""Shared pieces of the benchmarks b1-b4: machine facts, processes, ports, Redis, servers, results.

Importing it points the benchmark's own Celery app at the benchmark's Redis DB (BENCH_REDIS, default
redis://127.0.0.1:6379/14) through CELERY_BROKER_URL/CELERY_RESULT_BACKEND, which `maie` reads when it
is first used.

Every process a benchmark starts is registered in a `Procs` stack that stops it (SIGTERM to its
process group, then SIGKILL) when the benchmark ends, fails or is interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
PYTHON = sys.executable  # run the benchmarks with .venv/bin/python
DEV_MODEL = ROOT / "models" / "smollm2-135m-instruct"
REDIS_URL = os.environ.get("BENCH_REDIS") or "redis://127.0.0.1:6379/14"
OWNER_KEY = "maie:bench-owner"

# The benchmark process's settings (read on first use): its Celery app sends to the benchmark's Redis DB.
os.environ["CELERY_BROKER_URL"] = REDIS_URL
os.environ["CELERY_RESULT_BACKEND"] = REDIS_URL
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(ROOT / "tests"))

from brokers import pid_alive  # noqa: E402  (the tests' check, shared with the benchmarks)
from fakes.process import ManagedProcess, free_port  # noqa: E402  (the tests' process base)

# Variables of the developer's shell that would change a pool's settings: never passed on.
_SETTING_PREFIXES = ("LLM_", "CELERY_", "CHUNK_", "ENHANCE_", "QUEUE_", "TASK_", "WORKER_", "VLLM_")


# -- machine ------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "arch": platform.machine(),
        "nproc": os.cpu_count() or 0,
        "cpu": cpu_model(),
        "load": load_average(),
        "python": platform.python_version(),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    m = info or machine()
    return f"{m['date']} · {m['arch']}, {m['nproc']} CPUs, {m['cpu']} · load average {m['load']} (1/5/15 min)"


# -- processes ----------------------------------------------------------------------------------


class Procs(contextlib.ExitStack):
    """An exit stack that also turns SIGTERM/SIGHUP into KeyboardInterrupt, so cleanup runs."""

    def __enter__(self) -> Procs:
        super().__enter__()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.signal(sig, _interrupt)
            self.callback(signal.signal, sig, previous)
        return self

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: dict[str, str],
        log_dir: Path,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """`cmd` in a process group of its own (its children stop with it), its output in
        `log_dir`/`name`.out; stopped when the stack closes."""
        proc = ManagedProcess(name, cmd, log_dir / f"{name}.out", env=env, cwd=cwd or log_dir, group=True)
        self.callback(proc.stop)
        return proc.start()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, proc: ManagedProcess | None = None
) -> float:
    """Poll `check` until it is true; returns the seconds it took. Bounded by `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: {proc.name} exited {proc.proc.returncode}:\n{proc.log(4000)}")
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        time.sleep(0.25)
    tail = f"\n{proc.log(4000)}" if proc is not None else ""
    raise TimeoutError(f"{what}: not ready within {timeout:.0f} s{tail}")


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        return str(resp.read().decode())


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a started process: no MAIE/vLLM settings from the shell, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


# -- Redis --------------------------------------------------------------------------------------


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


_NAMED_BENCHES = ("load.py", "asr_rtf.py", "redis_commands.py", "redis_memory.py", "submit_rate.py")


def _other_benches() -> list[str]:
    """Other Python processes running a benchmark of bench/ (they may use the same Redis DB)."""
    found = []
    mine = _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        with contextlib.suppress(OSError):
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            if not argv or "python" not in Path(argv[0]).name:
                continue
            scripts = [Path(a).name for a in argv[1:3] if a.endswith(".py") and "bench" in a]
            benches = ("b1_", "b2_", "b3_", "b4_", "b5_", "b6_", "b7_", "b8_")
            if any(n in _NAMED_BENCHES or n[:3] in benches for n in scripts):
                found.append(f"pid {entry.name}: {' '.join(argv)[:120]}")
    return found


@contextlib.contextmanager
def bench_redis() -> Iterator[Any]:
    """The benchmark's Redis DB, flushed before and after; refuses one that another run holds."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    others = _other_benches()
    if others and "BENCH_REDIS" not in os.environ:
        raise SystemExit(
            "another benchmark is running (it may use the same Redis DB): "
            + "; ".join(others)
            + "\nwait for it, or set BENCH_REDIS=redis://127.0.0.1:6379/13"
        )
    owner = client.get(OWNER_KEY)
    if owner is not None and pid_alive(int(owner)) and int(owner) != os.getpid():
        raise SystemExit(f"{REDIS_URL} is held by benchmark pid {int(owner)}; set BENCH_REDIS to another DB")
    client.flushdb()
    client.set(OWNER_KEY, os.getpid(), ex=3600)
    global _redis
    _redis = client
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.flushdb()
        client.close()


_redis: Any = None


def check_alone() -> None:
    """Fail when another process flushed the benchmark's DB or another benchmark started meanwhile:
    its workers would take this run's tasks (and this run's workers its tasks)."""
    if _redis is None:
        return
    owner = _redis.get(OWNER_KEY)
    others = [] if "BENCH_REDIS" in os.environ else _other_benches()
    if owner is None or int(owner) != os.getpid() or others:
        raise RuntimeError(
            f"{REDIS_URL} was taken over during the run ({'; '.join(others) or 'the DB was flushed'}): "
            "the figures are void; run again with BENCH_REDIS set to a DB nobody else uses"
        )


# -- servers and pools --------------------------------------------------------------------------


def build_tiny_model(procs: Procs, out_dir: Path) -> Path:
    """The tiny random Qwen2 model of maie.devmodel, built into `out_dir` (about 5-15 s)."""
    proc = procs.start(
        "build-tiny-model",
        [PYTHON, "-m", "maie.devmodel", "tiny", str(out_dir)],
        env=clean_env(),
        log_dir=out_dir.parent,
        cwd=ROOT,
    )
    try:
        code = proc.proc.wait(300)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise RuntimeError("building the tiny model took more than 300 s") from None
    if code != 0:
        raise RuntimeError(f"building the tiny model failed:\n{proc.log(3000)}")
    return out_dir


def resolve_model(procs: Procs, choice: str, tmp: Path) -> tuple[Path, str]:
    """(`model dir`, description) for --model tiny|dev|PATH."""
    if choice == "tiny":
        path = build_tiny_model(procs, tmp / "tiny-model")
        return path, "tiny random Qwen2 (maie.devmodel, 2 layers, hidden 128), built for this run"
    if choice == "dev":
        if not (DEV_MODEL / "config.json").exists():
            raise SystemExit(f"{DEV_MODEL} is missing: run scripts/make-dev-model.sh")
        return DEV_MODEL, "SmolLM2-135M-Instruct bf16 (models/smollm2-135m-instruct)"
    path = Path(choice).resolve()
    if not (path / "config.json").exists():
        raise SystemExit(f"--model {choice}: no config.json there")
    return path, str(path)


# Engine benchmarks on the 2-core development machine: the engine side (a vLLM server, API process
# and engine; or an in-process engine's compute threads, VLLM_CPU_OMP_THREADS_BIND) on ENGINE_CPUS,
# the orchestration side (worker pools, the benchmark process and its direct clients) on
# ORCHESTRATION_CPUS, the same for MAIE and for the direct way. Redis is the machine's shared server
# and is not pinned.
ENGINE_CPUS = "0"
ORCHESTRATION_CPUS = "1"


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """`cmd` run on `cpus` (taskset; its children inherit it), or as it is with None."""
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


def pin_pid(pid: int, cpus: str) -> None:
    """Every thread of a running process `pid` (and those it starts later) on `cpus`."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def pin_self(cpus: str) -> None:
    """This benchmark process (its direct clients are its threads) on `cpus`."""
    os.sched_setaffinity(0, {int(x) for x in cpus.split(",")})


def add_engine_args(p: argparse.ArgumentParser, timeout: float) -> None:
    """The options of a benchmark that runs a vLLM engine on CPU and a direct child process."""
    p.add_argument("--engine-cores", default="0", help='VLLM_CPU_OMP_THREADS_BIND, or "auto"')
    p.add_argument("--timeout", type=float, default=timeout, help="bound of each phase, seconds")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--direct-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)


def engine_env(cores: str) -> dict[str, str]:
    """The environment that pins a vLLM CPU engine's compute threads to `cores` ("auto": vLLM's choice).

    On the 2-core development machine the benchmarks pin the engine to core 0 by default and leave
    core 1 to the API server, the workers, Redis and the clients: as in production, where the model
    runs on hardware of its own, the pipeline then does not take its CPU from the engine."""
    return {} if cores == "auto" else {"VLLM_CPU_OMP_THREADS_BIND": cores}


@dataclass
class VllmServer:
    proc: ManagedProcess
    port: int
    model_name: str
    started_seconds: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def metric(self, name: str) -> float:
        """Sum of every sample of a Prometheus counter (all label sets) from /metrics."""
        total = 0.0
        for line in http_get(f"{self.url}/metrics", timeout=10).splitlines():
            if line.startswith(name) and (line[len(name)] in "{ "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def generation_tokens(self) -> float:
        return self.metric("vllm:generation_tokens_total")


def start_vllm_server(
    procs: Procs,
    model_dir: Path,
    log_dir: Path,
    *,
    served_name: str = "bench-model",
    max_model_len: int = 2048,
    max_num_seqs: int = 32,
    extra_env: dict[str, str] | None = None,
    engine_cores: str = "0",
    server_cpus: str | None = None,
    timeout: float = 300.0,
) -> VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` on a free port of 127.0.0.1 (eager, bf16).

    `engine_cores` pins the engine's compute threads (VLLM_CPU_OMP_THREADS_BIND, e.g. "0" or "0-1");
    "auto" leaves vLLM's default binding. `server_cpus` runs the whole server (API process and
    engine) on those CPUs."""
    port = free_port()
    cmd = [
        PYTHON,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        "--dtype",
        "bfloat16",
        "--enforce-eager",
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    env = clean_env(VLLM_CPU_KVCACHE_SPACE="1", **engine_env(engine_cores), **(extra_env or {}))
    proc = procs.start("vllm-server", pinned(cmd, server_cpus), env=env, log_dir=log_dir)
    server = VllmServer(proc, port, served_name, 0.0)
    server.started_seconds = wait_until(
        "vLLM server", lambda: http_get(f"{server.url}/health") is not None, timeout, proc
    )
    return server


def start_pool(
    procs: Procs,
    pool: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
    cpus: str | None = None,
) -> ManagedProcess:
    """`scripts/start-worker.sh POOL` (foreground) as users start it, with its own node name;
    on `cpus` when given (taskset)."""
    env = {**env, "LOG_DIR": str(log_dir / f"logs-{pool}")}
    cmd = ["bash", str(ROOT / "scripts" / "start-worker.sh"), pool, "-n", f"bench-{pool}-{os.getpid()}@%h"]
    cmd = pinned([*cmd, *extra_args], cpus)
    proc = procs.start(f"worker-{pool}", cmd, env=env, log_dir=log_dir, cwd=ROOT)
    return proc.wait_logged(" ready.", timeout, poll=0.25)


def start_server_pools(
    procs: Procs, base_url: str, model: str, log_dir: Path, *, cpus: str | None = None, **settings: str
) -> ManagedProcess:
    """The enhance and summary pools against one OpenAI-compatible server (the summary task falls
    back to the enhance endpoint), with `settings` as extra variables; returns the enhance pool."""
    env = pool_env(
        LLM_BACKEND="vllm_server",
        LLM_SERVER__ENHANCE_BASE_URL=base_url,
        LLM_SERVER__ENHANCE_MODEL_NAME=model,
        **settings,
    )
    enhance = start_pool(procs, "enhance", env, log_dir, cpus=cpus)
    start_pool(procs, "summary", env, log_dir, cpus=cpus)
    return enhance


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_concurrency(proc: ManagedProcess) -> str:
    """The concurrency scripts/start-worker.sh chose, from its first output line."""
    for line in proc.log().splitlines():
        if line.startswith("==> ") and "concurrency" in line:
            return line.rsplit("concurrency", 1)[1].split()[0]
    return "?"


def pool_env(redis_url: str = REDIS_URL, **settings: str) -> dict[str, str]:
    return clean_env(
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        LLM_SERVER__REQUEST_TIMEOUT_SECONDS="120",
        **settings,
    )


# -- direct requests ----------------------------------------------------------------------------


@dataclass
class DirectRun:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    completion_tokens: int = 0


def direct_chat(
    base_url: str,
    model: str,
    conversations: Sequence[Sequence[dict[str, str]]],
    *,
    concurrency: int,
    max_tokens: int,
    temperature: float = 0.0,
    ignore_eos: bool = False,
    timeout: float = 120.0,
) -> DirectRun:
    """Send every conversation once, `concurrency` at a time, each thread with its own openai client."""
    import threading

    import openai

    check_alone()
    local = threading.local()
    extra = {"ignore_eos": True} if ignore_eos else None

    def one(messages: Sequence[dict[str, str]]) -> tuple[float, int]:
        client = local.client
        t0 = time.perf_counter()
        reply = client.chat.completions.create(
            model=model,
            messages=list(messages),  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            extra_body=extra,
        )
        return time.perf_counter() - t0, reply.usage.completion_tokens if reply.usage else 0

    barrier = threading.Barrier(concurrency)

    def make_client(_: int) -> None:
        # A couple of retries, as MAIE's tasks get from Celery: one dropped connection must not
        # end the run.
        local.client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=2, timeout=timeout)
        barrier.wait(30)  # every thread makes its own, once

    run = DirectRun(0.0)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        # Clients are made before the clock starts, as a pool's workers have theirs already.
        list(pool.map(make_client, range(concurrency)))
        started = time.perf_counter()
        for latency, tokens in pool.map(one, conversations):
            run.latencies.append(latency)
            run.completion_tokens += tokens
        run.seconds = time.perf_counter() - started
    return run


# -- MAIE jobs ----------------------------------------------------------------------------------


def bench_settings(**overrides: Any) -> Any:
    """MAIE settings of the benchmark process (no .env), sending to the benchmark's Redis DB."""
    from maie.settings import Settings

    return Settings(  # type: ignore[call-arg]
        _env_file=None, celery_broker_url=REDIS_URL, celery_result_backend=REDIS_URL, **overrides
    )


def chunk_texts(text: str, settings: Any) -> list[str]:
    """The chunk texts `maie.submit` makes of `text` with `settings` (same functions, same counter)."""
    from maie.chunking import chunk_segments, load_token_counter
    from maie.inputs import load_transcript

    s = settings
    segments = load_transcript(text, max_bytes=s.max_input_bytes)
    tokenizer = s.llm_enhance.tokenizer or (s.llm_enhance.model if s.llm_backend == "local_vllm" else None)
    return [c.text for c in chunk_segments(segments, s.chunk_max_tokens, load_token_counter(tokenizer))]


def one_turn_budget(text: str, settings: Any) -> int:
    """A chunk budget that holds the longest turn of `text` alone (with settings' token counter)."""
    from maie.chunking import load_token_counter
    from maie.inputs import load_transcript, segments_to_text

    s = settings
    tokenizer = s.llm_enhance.tokenizer or (s.llm_enhance.model if s.llm_backend == "local_vllm" else None)
    count = load_token_counter(tokenizer)
    segments = load_transcript(text, max_bytes=s.max_input_bytes)
    return max(17, max(count(segments_to_text([seg])) for seg in segments))


def run_job(text: str, settings: Any, *, timeout: float, poll: float = 0.01) -> tuple[float, Any]:
    """Submit an enhance-only job and poll its result every `poll` s: (seconds, JobResult)."""
    from maie import submit

    check_alone()
    started = time.perf_counter()
    job = submit(text, features={"enhance"}, settings=settings)
    while True:
        result = job.result()
        if result is not None:
            break
        if time.perf_counter() - started > timeout:
            job.cancel()
            raise TimeoutError(f"job {job.id} did not finish within {timeout} s")
        time.sleep(poll)
    seconds = time.perf_counter() - started
    if result.status != "SUCCESS":
        raise RuntimeError(f"job {job.id} ended {result.status}: {result.error}")
    return seconds, result


def llm_seconds(job_id: str) -> float:
    """Seconds the job's chunk tasks spent in their LLM calls, summed over chunks (from the store)."""
    from maie.store import JobStore

    records = JobStore(REDIS_URL, 3600).enhanced(job_id)
    return float(sum(r.get("seconds") or 0.0 for r in records.values()))


def transcript(n_lines: int, words_per_line: int = 12, seed: int = 1) -> str:
    """`n_lines` distinct lowercase unpunctuated speaker turns, like raw ASR output."""
    import random

    rng = random.Random(seed)
    vocab = (
        "budget plan design remote control battery button colour yellow market price user test team "
        "meeting decide agree idea screen speech voice report week month client deadline prototype "
        "material rubber plastic shape curve logo brand sales target cost profit risk review"
    ).split()
    speakers = ("Anna", "Bao", "Chris", "Dana")
    lines = []
    for i in range(n_lines):
        words = " ".join(rng.choice(vocab) for _ in range(words_per_line))
        lines.append(f"{speakers[i % len(speakers)]}: so we {words}")
    return "\n".join(lines) + "\n"


# -- figures and results ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def record(title: str, lines: Sequence[str], info: dict[str, Any]) -> None:
    """Append a dated section `## title — date` to bench/RESULTS.md (never rewrites what is there)."""
    block = ["", f"## {title} — {info['date']}", "", f"- machine: {machine_line(info)}", *lines, ""]
    with open(RESULTS, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # bench/load.py rewrites its section under the same lock
        try:
            f.write("\n".join(block))
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory, removed afterwards unless BENCH_KEEP_TMP=1."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP_TMP") != "1":
            shutil.rmtree(path, ignore_errors=True)
