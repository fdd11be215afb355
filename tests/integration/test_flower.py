"""Flower as operators start it (scripts/start-flower.sh → `celery -A maie flower`), with basic auth,
watching the `dual` workers: a job's tasks are found through its HTTP API, carrying ids only."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Worker, base_env
from fakes.process import ManagedProcess, free_port
from fakes.server_process import FakeServerProcess
from helpers import get, poll

from maie import submit
from maie.settings import load_settings

USER, PASSWORD = "ops", "flower-pw-7c1e"
TRANSCRIPT = (
    "Harbourmaster: the northern pier closes for dredging next week\n"
    "Pilot: then the evening ferry uses the quarantine berth instead\n"
)


@pytest.fixture
def flower(dual: dict[str, Worker], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = base_env(
        FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}",
        FLOWER_PORT=str(port),
        LOG_DIR=str(tmp_path / "logs"),
        MAIE_RUN_DIR=str(tmp_path / "run"),
    )
    script = str(ROOT / "scripts" / "start-flower.sh")
    flower = ManagedProcess("Flower", [script], tmp_path / "flower.out", env=env)
    url = f"http://127.0.0.1:{port}"
    flower.start().wait_ready(lambda: get(f"{url}/healthcheck")[0] == 200, 60, poll=0.3)
    try:
        # Flower learns about workers from their events: wait until it has heard from both pools.
        def both_online() -> bool:
            metrics = get(f"{url}/metrics")[1].decode()
            online = [
                line
                for line in metrics.splitlines()
                if line.startswith("flower_worker_online") and line.endswith(" 1.0")
            ]
            return any('worker="enhance-' in x for x in online) and any(
                'worker="summary-' in x for x in online
            )

        poll("Flower seeing both pools' heartbeats", both_online)
        yield url
    finally:
        flower.stop()
        assert "Traceback" not in flower.log()


def test_flower_shows_the_jobs_tasks_with_ids_only(
    flower: str, server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    job = submit(TRANSCRIPT, settings=load_settings(env_file=None))
    result = job.wait(timeout=60)
    assert result.status == "SUCCESS", result.error

    def job_tasks() -> dict[str, dict[str, Any]]:
        status, body = get(f"{flower}/api/tasks", auth=(USER, PASSWORD))
        assert status == 200
        tasks: dict[str, dict[str, Any]] = json.loads(body)
        mine = {tid: t for tid, t in tasks.items() if tid == job.id or tid.startswith(f"{job.id}-")}
        summary = mine.get(job.id, {})
        enhance = [t for t in mine.values() if t.get("name") == "maie.enhance_chunk"]
        done = summary.get("state") == "SUCCESS" and enhance and all(t["state"] == "SUCCESS" for t in enhance)
        return mine if done else {}

    tasks = poll("Flower showing the job's finished tasks", job_tasks)
    assert tasks[job.id]["name"] == "maie.summarize"  # the job id is the summarize task's id
    enhance = [t for t in tasks.values() if t["name"] == "maie.enhance_chunk"]
    assert len(enhance) == len(result.chunks)
    assert {t.get("worker", "").split("@")[0].split("-")[0] for t in enhance} == {"enhance"}
    assert tasks[job.id].get("worker", "").startswith("summary-")

    # Arguments are ids: no transcript text, no key.
    shown = json.dumps([(t.get("args"), t.get("kwargs")) for t in tasks.values()])
    assert job.id in shown
    for word in ("Harbourmaster", "dredging", "quarantine", "ferry"):
        assert word.lower() not in shown.lower()
    everything = json.dumps(tasks)
    for secret in ("sk-test-enhance-key", "sk-test-summary-key"):
        assert secret not in everything

    # The API needs the password.
    assert get(f"{flower}/api/tasks")[0] == 401
    assert get(f"{flower}/api/tasks", auth=(USER, "wrong"))[0] == 401
    assert get(f"{flower}/api/task/info/{job.id}")[0] == 401
    status, body = get(f"{flower}/api/task/info/{job.id}", auth=(USER, PASSWORD))
    assert status == 200 and json.loads(body)["name"] == "maie.summarize"


def test_start_flower_refuses_to_run_without_auth(tmp_path: Path) -> None:
    env = base_env(FLOWER_PORT=str(free_port()), MAIE_RUN_DIR=str(tmp_path / "run"))
    env.pop("FLOWER_BASIC_AUTH", None)
    proc = subprocess.run(
        [str(ROOT / "scripts" / "start-flower.sh"), "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "FLOWER_BASIC_AUTH is not set" in proc.stderr
    assert not (tmp_path / "run" / "flower.pid").exists()
    bad = subprocess.run(
        [str(ROOT / "scripts" / "start-flower.sh")],
        env={**env, "FLOWER_BASIC_AUTH": "no-colon"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "user:password" in bad.stderr
