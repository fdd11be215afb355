"""Settings are read when a worker or a command starts, never when `maie` is imported.

A broken configuration (a removed variable name, a broker URL that is not one) must not stop an
application that merely imports MAIE; `celery -A maie worker`, `celery -A maie flower` and the `maie`
CLI refuse it as they start, with one line and exit code 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import base_env

BIN = Path(sys.executable).parent
CELERY = shutil.which("celery", path=str(BIN)) or "celery"
MAIE = shutil.which("maie", path=str(BIN)) or "maie"

LEGACY = "LLM_SERVER__BASE_URL"
BROKEN = {LEGACY: "http://localhost:8000/v1", "CELERY_BROKER_URL": "not-a-broker-url"}


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_importing_maie_reads_no_setting(tmp_path: Path) -> None:
    # A .env in the working directory that names a removed variable: reading it would refuse.
    (tmp_path / ".env").write_text("LLM_SERVER__MODEL_ENHANCE=Qwen/Qwen2.5-3B-Instruct\n")
    probe = textwrap.dedent(
        """
        import sys

        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
        import maie, maie.inputs
        from maie.settings import get_settings

        print("env-file-opened" if any(p.endswith(".env") for p in opened) else "env-file-untouched")
        print("settings-read" if get_settings.cache_info().currsize else "settings-unread")
        print("app-configured" if maie.app.configured else "app-unconfigured")
        try:
            maie.submit("hello there")
        except maie.ConfigError as exc:
            print("first-use:", exc)
        """
    )
    proc = run([sys.executable, "-c", probe], base_env(**BROKEN), tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["env-file-untouched", "settings-unread", "app-unconfigured"]
    # The application learns of the broken configuration when it first uses MAIE, as ConfigError.
    assert lines[3].startswith("first-use: ") and LEGACY in lines[3]


def test_the_worker_refuses_a_broken_environment_as_it_starts(tmp_path: Path) -> None:
    proc = run([CELERY, "-A", "maie", "worker", "-Q", "enhance"], base_env(**BROKEN), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("maie: configuration error: ") and proc.stderr.count("\n") == 1
    assert f"{LEGACY} (set in environment) is no longer supported" in proc.stderr


def test_the_worker_refuses_records_that_expire_before_a_redelivery(tmp_path: Path) -> None:
    env = base_env(JOB_TTL_SECONDS="60", BROKER_VISIBILITY_TIMEOUT="120")
    proc = run([CELERY, "-A", "maie", "worker", "-Q", "enhance"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("maie: configuration error: JOB_TTL_SECONDS=60 must exceed the visibility")
    assert proc.stderr.count("\n") == 1


def test_the_worker_reads_the_env_file_it_is_given(tmp_path: Path) -> None:
    bad = tmp_path / "prod.env"
    bad.write_text("LLM_SERVER__MODEL_SUMMARY=Qwen/Qwen2.5-3B-Instruct\n")
    cmd = [CELERY, "-A", "maie", "worker", "-Q", "summary", "--env-file", str(bad)]
    proc = run(cmd, base_env(), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"LLM_SERVER__MODEL_SUMMARY (set in {bad}) is no longer supported" in proc.stderr


def test_flower_and_inspect_refuse_it_too(tmp_path: Path) -> None:
    for command in (["flower"], ["inspect", "ping"]):
        proc = run([CELERY, "-A", "maie", *command], base_env(**BROKEN), tmp_path)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.startswith("maie: configuration error: "), (command, proc.stderr)


def test_the_cli_refuses_it_as_it_starts(tmp_path: Path) -> None:
    transcript = tmp_path / "t.txt"
    transcript.write_text("hello there\n")
    proc = run([MAIE, "submit", str(transcript)], base_env(**BROKEN), tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("maie: error: ") and proc.stderr.count("\n") == 1
    assert LEGACY in proc.stderr
