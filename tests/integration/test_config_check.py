"""`maie config check|show|vllm-args` as operators run them, against live and dead endpoints."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import base_env, dual_env
from fakes.server_process import FakeServerProcess

from maie.errors import ConfigError
from maie.serve import vllm_server_args, vllm_server_env, worker_concurrency
from maie.settings import load_settings

MAIE = str(Path(sys.executable).parent / "maie")


def maie(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAIE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def test_check_reaches_both_live_servers(
    server_a: FakeServerProcess, server_b: FakeServerProcess, tmp_path: Path
) -> None:
    server_a.reset()
    server_b.reset()
    proc = maie("config", "check", env=dual_env(server_a, server_b), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for task, server, model in (
        ("enhance", server_a, "enhance-model"),
        ("summary", server_b, "summary-model"),
    ):
        pattern = (
            rf"^{task}: ok {re.escape(server.base_url)} serves {model}; model {model}, "
            rf"context 4096 tokens; one-token completion in \d+ ms$"
        )
        assert re.search(pattern, proc.stdout, re.MULTILINE), proc.stdout
    assert any(str(e["path"]).endswith("/models") for e in server_a.log())
    for secret in ("sk-test-enhance-key", "sk-test-summary-key"):
        assert secret not in proc.stdout + proc.stderr


def test_check_against_a_dead_port_fails_with_a_hint(server_b: FakeServerProcess, tmp_path: Path) -> None:
    url = dead_url()
    env = base_env(
        LLM_SERVER__ENHANCE_BASE_URL=url,
        LLM_SERVER__SUMMARY_BASE_URL=server_b.base_url,
        LLM_SERVER__SUMMARY_API_KEY="sk-test-summary-key",
    )
    proc = maie("config", "check", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert f"enhance: FAILED {url}" in proc.stderr
    assert "hint: is the enhance server running? Check LLM_SERVER__ENHANCE_BASE_URL" in proc.stderr
    assert 'tail -f logs/app.log | grep "LLM"' in proc.stderr
    assert re.search(r"^summary: ok ", proc.stdout, re.MULTILINE)  # the live one still passes


def test_show_masks_keys(tmp_path: Path) -> None:
    env_file = tmp_path / "prod.env"
    env_file.write_text(
        "LLM_SERVER__ENHANCE_BASE_URL=http://gpu1.internal:8001/v1\n"
        "LLM_SERVER__ENHANCE_API_KEY=sk-planted-enhance-4f1d\n"
        "LLM_SERVER__SUMMARY_BASE_URL=http://gpu2.internal:8002/v1\n"
        "LLM_SERVER__SUMMARY_MODEL_NAME=Qwen2.5-1.5B-Instruct\n"
        "CELERY_BROKER_URL=redis://:redis-pw-93a2@redis:6379/0\n"
    )
    env = base_env()
    env.pop("CELERY_BROKER_URL")  # the file's broker, to see its password masked
    proc = maie("config", "show", "--env-file", str(env_file), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "enhance: endpoint=http://gpu1.internal:8001/v1 model=(served model) api_key=set (masked)" in out
    # The summary endpoint has its own URL and model, and falls back to the enhancement key.
    assert "summary: endpoint=http://gpu2.internal:8002/v1 model=Qwen2.5-1.5B-Instruct api_key=set" in out
    assert "sk-planted-enhance-4f1d" not in out and "redis-pw-93a2" not in out


def test_show_flags_removed_names_in_the_file_without_printing_values(tmp_path: Path) -> None:
    env_file = tmp_path / "old.env"
    env_file.write_text(
        "LLM_BACKEND=vllm_server\n"
        "LLM_SERVER__BASE_URL=http://localhost:8000/v1\n"
        "LLM_SERVER__API_KEY=sk-planted-legacy-77c0\n"
        "LLM_SERVER__MODEL_ENHANCE=Qwen/Qwen2.5-3B-Instruct\n"
        "LLM_SERVER__MODEL_SUMMARY=Qwen/Qwen2.5-3B-Instruct\n"
        "LLM_SERVER__ENHANCE_API_KEY=sk-planted-new-51ab\n"
    )
    proc = maie("config", "show", "--env-file", str(env_file), env=base_env(), cwd=tmp_path)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    for secret in ("sk-planted-legacy-77c0", "sk-planted-new-51ab"):
        assert secret not in out
    assert proc.stderr.startswith("maie: error: ") and proc.stderr.count("\n") == 1
    for old, new in (
        ("LLM_SERVER__BASE_URL", "LLM_SERVER__ENHANCE_BASE_URL"),
        ("LLM_SERVER__API_KEY", "LLM_SERVER__ENHANCE_API_KEY"),
        ("LLM_SERVER__MODEL_ENHANCE", "LLM_SERVER__ENHANCE_MODEL_NAME"),
        ("LLM_SERVER__MODEL_SUMMARY", "LLM_SERVER__SUMMARY_MODEL_NAME"),
    ):
        assert f"{old} (set in {env_file}) is no longer supported: use {new}" in proc.stderr
    assert "See docs/MIGRATION.md." in proc.stderr
    # What the rest of the file resolves to is still shown, the new key masked.
    assert "api_key=set (masked)" in proc.stdout


def test_removed_name_in_the_environment_stops_the_cli(tmp_path: Path) -> None:
    env = base_env(LLM_SERVER__BASE_URL="http://localhost:8000/v1")
    proc = maie("config", "check", env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "maie: error: LLM_SERVER__BASE_URL (set in environment) is no longer supported: "
        "use LLM_SERVER__ENHANCE_BASE_URL. See docs/MIGRATION.md."
    )


def test_vllm_args_come_from_the_task_settings(tmp_path: Path) -> None:
    env = base_env(
        LLM_SUM__MODEL="/models/Qwen2.5-1.5B-Instruct",
        LLM_SUM__MAX_NUM_SEQS="12",
        LLM_SERVER__SUMMARY_MODEL_NAME="summary-served",
        LLM_SERVER__SUMMARY_API_KEY="sk-planted-vllm-0b7e",
    )
    proc = maie("config", "vllm-args", "summary", "--port", "8102", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--model"] == "/models/Qwen2.5-1.5B-Instruct"
    assert pairs["--served-model-name"] == "summary-served"
    assert pairs["--port"] == "8102"
    assert pairs["--max-model-len"] == "8192"  # the summary default survives setting another field
    assert pairs["--max-num-seqs"] == "12"
    assert pairs["--dtype"] == "auto"
    assert ("--gpu-memory-utilization" in args) == bool(shutil.which("nvidia-smi"))
    assert "sk-planted-vllm-0b7e" not in proc.stdout + proc.stderr
    assert not any("api-key" in a for a in args)

    enhance = maie("config", "vllm-args", "enhance", env=base_env(), cwd=tmp_path).stdout.splitlines()
    assert enhance[enhance.index("--port") + 1] == "8001"
    assert enhance[enhance.index("--served-model-name") + 1] == enhance[enhance.index("--model") + 1]
    bad = maie("config", "vllm-args", "translate", env=base_env(), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown task" in bad.stderr


def test_server_key_and_gpu_fraction_go_where_they_belong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SERVER__ENHANCE_API_KEY", "sk-planted-env-1")
    monkeypatch.setenv("LLM_ENHANCE__GPU_MEMORY_UTILIZATION", "0.55")
    monkeypatch.setenv("LLM_SUM__CPU_KVCACHE_SPACE_GB", "3")
    settings = load_settings(env_file=None)
    gpu_args = vllm_server_args(settings, "enhance", 8001, gpu=True)
    assert gpu_args[gpu_args.index("--gpu-memory-utilization") + 1] == "0.55"
    assert "--gpu-memory-utilization" not in vllm_server_args(settings, "enhance", 8001, gpu=False)
    assert "sk-planted-env-1" not in " ".join(gpu_args)
    assert vllm_server_env(settings, "enhance", gpu=True) == {"VLLM_API_KEY": "sk-planted-env-1"}
    # The summary server takes the key its workers will send: the enhancement key, as a fallback.
    assert vllm_server_env(settings, "summary", gpu=False) == {
        "VLLM_API_KEY": "sk-planted-env-1",
        "VLLM_CPU_KVCACHE_SPACE": "3",
    }


def test_pool_concurrency_follows_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = {"QUEUE": "summary"}
    monkeypatch.setenv("ASR__CONCURRENCY", "5")
    assert worker_concurrency(load_settings(env_file=None), pool) == 16
    monkeypatch.setenv("LLM_BACKEND", "local_vllm")
    monkeypatch.setenv("LLM_SUM__MAX_NUM_SEQS", "6")
    assert worker_concurrency(load_settings(env_file=None), pool) == 6
    assert worker_concurrency(load_settings(env_file=None), {"QUEUE": "asr"}) == 5
    monkeypatch.setenv("WORKER_CONCURRENCY", "3")
    assert worker_concurrency(load_settings(env_file=None), pool) == 3
    monkeypatch.delenv("WORKER_CONCURRENCY")
    with pytest.raises(ConfigError, match="names no known queue"):
        worker_concurrency(load_settings(env_file=None), {"QUEUE": "enhanced"})
