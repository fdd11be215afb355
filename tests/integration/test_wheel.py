"""`pip install maie` as users get it: a wheel built from this checkout, installed (not editable)
into a fresh virtualenv. The built-in templates come from the wheel, `TEMPLATES_DIR` still adds
bundles, and a job runs through a worker started from that virtualenv.

To stay fast, the fresh virtualenv gets only MAIE (`--no-deps`); its dependencies are read from the
test virtualenv's site-packages through a `.pth` line appended after its own site-packages, so the
`maie` it imports is the wheel's, never this checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import ROOT, clean_redis, dual_env
from fakes.process import ManagedProcess
from fakes.server_process import FakeServerProcess

SHIPPED = {"generic_summary", "generic_summary_vi", "interview", "meeting_notes", "meeting_notes_vi"}
TRANSCRIPT = "Alice: the budget review moves to thursday\nBob: and the audit report is due friday\n"


def run(cmd: list[str | Path], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with MAIE installed from a wheel of this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "maie", src / "maie", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", work / "dist", src], env, work)
    wheels = list((work / "dist").glob("maie-*.whl"))
    assert len(wheels) == 1, wheels

    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], env, work)
    python = venv / "bin" / "python"
    run([*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheels[0]], env, work)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(run([python, "-c", purelib], env, work).strip())
    (site / "zz-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def venv_env(venv: Path, base: dict[str, str]) -> dict[str, str]:
    # No PYTHONPATH: the checkout must not be importable.
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return env


@pytest.fixture(scope="module")
def pool(
    wheel_venv: Path,
    redis_client: redis.Redis,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """One worker of the installed package consuming both queues (`python -m celery -A maie worker`)."""
    clean_redis(redis_client)
    env = venv_env(wheel_venv, dual_env(server_a, server_b))
    work = tmp_path_factory.mktemp("wheel-worker")
    env["LOG_DIR"] = str(work / "logs")
    cmd = [str(wheel_venv / "bin" / "python"), "-m", "celery", "-A", "maie", "worker"]
    cmd += ["-Q", "enhance,summary", "-c", "2", "-n", f"wheel-{time.monotonic_ns()}@%h"]
    cmd += ["--without-mingle", "--without-gossip"]
    worker = ManagedProcess("wheel worker", cmd, work / "worker.out", env=env, cwd=work)
    worker.start().wait_logged(" ready.", 120, poll=0.3)
    try:
        yield env
    finally:
        worker.stop(timeout=60)


def test_the_wheel_ships_the_templates_and_templates_dir_adds_to_them(
    wheel_venv: Path, tmp_path: Path
) -> None:
    env = venv_env(wheel_venv, {"HOME": str(tmp_path)})
    maie = wheel_venv / "bin" / "maie"
    where = run([wheel_venv / "bin" / "python", "-c", "import maie; print(maie.__file__)"], env, tmp_path)
    assert where.startswith(str(wheel_venv)), where
    listed = run([maie, "templates"], env, tmp_path)
    assert SHIPPED <= set(listed.split()), listed

    mine = tmp_path / "mine"
    builtin = Path(where.strip()).parent / "builtin_templates"
    shutil.copytree(builtin / "interview", mine / "hiring_panel")
    listed = run([maie, "templates"], {**env, "TEMPLATES_DIR": str(mine)}, tmp_path)
    assert SHIPPED | {"hiring_panel"} <= set(listed.split()), listed


def test_a_job_runs_through_the_installed_package(pool: dict[str, str], tmp_path: Path) -> None:
    transcript = tmp_path / "meeting.txt"
    transcript.write_text(TRANSCRIPT)
    maie = Path(pool["PATH"].split(":")[0]) / "maie"
    cmd = [maie, "submit", transcript, "--template", "meeting_notes", "--wait", "--timeout", "120"]
    shown = run([*cmd, "--format", "json"], pool, tmp_path)
    result = json.loads(shown)
    assert result["status"] == "SUCCESS", result
    assert "Alice: The budget review moves to thursday." in result["enhanced_text"]
    assert set(result["summary"]) >= {"action_items", "decisions"}, result["summary"]
