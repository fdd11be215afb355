"""Secrets: an API key reaches its LLM server and no output at all.

Distinctive keys are planted in a worker's environment and in a `.env` file; jobs succeed, and fail
on the error path (the servers answer 401). Then every output is searched for the keys: worker
output and LOG_DIR files (at DEBUG), results, the CLI (`config show`, `config check`, `result`), every
Redis key and value (task arguments and results with `result_extended`, chord state, job records)
and the task events Flower shows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fakes.server_process import FakeServerProcess
from helpers import chat_requests, maie_cli, transcript
from rig import Rig, open_rig

from maie import submit
from maie.celery import client_app

ENHANCE_KEY = "sk-PLANTED-enhance-7f3a"  # in the worker environment
SUMMARY_KEY = "sk-PLANTED-summary-c91e"  # in the .env file
PLANTED = (ENHANCE_KEY, SUMMARY_KEY, "PLANTED")


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[FakeServerProcess, FakeServerProcess]]:
    with (
        FakeServerProcess(name="E", model="enhance-model", api_key=ENHANCE_KEY) as e,
        FakeServerProcess(name="S", model="summary-model", api_key=SUMMARY_KEY) as s,
    ):
        yield e, s


class EventTap:
    """Captures the task events a dashboard (Flower) receives from the workers."""

    def __init__(self, app: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self._conn = app.connection_for_read()
        self._receiver = app.events.Receiver(self._conn, handlers={"*": self.events.append})
        self._thread = threading.Thread(target=self._run, name="event-tap", daemon=True)

    def _run(self) -> None:
        try:
            self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # reported in the events, so the test sees it
            self.events.append({"type": "tap-error", "error": repr(exc)})

    def __enter__(self) -> EventTap:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._conn.release()


def redis_dump(client: redis.Redis) -> str:
    """Every key and value in the database, as text."""
    out = []
    for key in client.scan_iter("*"):
        kind: Any = client.type(key)  # a str: the client decodes replies
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = f"<{kind}>"
        out.append(f"{key} {value}")
    return "\n".join(out)


def test_planted_api_keys_reach_the_servers_and_no_output(
    planted: tuple[FakeServerProcess, FakeServerProcess], tmp_path: Path
) -> None:
    e, s = planted
    with open_rig(tmp_path, e, s) as rig:
        run_secret_checks(rig, tmp_path)


def run_secret_checks(rig: Rig, tmp_path: Path) -> None:
    env = rig.env(LLM_SERVER__ENHANCE_API_KEY=ENHANCE_KEY, LOG_LEVEL="DEBUG", TASK_MAX_RETRIES="1")
    del env["LLM_SERVER__SUMMARY_API_KEY"]  # the summary key comes from .env only
    for queue in ("enhance", "summary"):
        (rig.log_dir / f"{queue}-0").mkdir(parents=True)
        (rig.log_dir / f"{queue}-0" / ".env").write_text(f"LLM_SERVER__SUMMARY_API_KEY={SUMMARY_KEY}\n")
    (tmp_path / ".env").write_text(f"LLM_SERVER__SUMMARY_API_KEY={SUMMARY_KEY}\n")
    settings = rig.settings()
    outputs: dict[str, str] = {}
    with EventTap(client_app(settings)) as tap:
        workers = rig.start(env, enhance=2, summary=1)
        ok = submit(transcript(3), settings=settings)
        ok_result = ok.wait(timeout=60)
        assert ok_result.status == "SUCCESS", ok_result.error
        # The error path: each server refuses the key once (HTTP 401), which is never retried.
        rig.a.faults([{"kind": "status", "status": 401, "times": 1}])
        bad_enhance = submit(transcript(3), settings=settings).wait(timeout=60)
        rig.b.faults([{"kind": "status", "status": 401, "times": 1}])
        bad_summary = submit(transcript(3), settings=settings).wait(timeout=60)
        for name, cmd in {
            "config show": ("config", "show"),
            "config check": ("config", "check"),
            "result ok": ("result", ok.id, "--format", "json"),
            "result failed": ("result", bad_enhance.job_id),
        }.items():
            proc = maie_cli(*cmd, env=env, cwd=tmp_path)
            outputs[name] = proc.stdout + proc.stderr
    # The keys were sent: each server accepted its own key (it checks it) and logged only that
    # an Authorization header was present.
    assert all(r["auth"] for r in chat_requests(rig.a) + chat_requests(rig.b))
    # (three jobs, then `config check`'s one-token completion)
    assert [r["status"] for r in chat_requests(rig.a)] == [200, 401, 200, 200]
    assert [r["status"] for r in chat_requests(rig.b)] == [200, 401, 200]
    # The error path ran: both failures name the refused key without showing it.
    for failed, stage in ((bad_enhance, "enhance"), (bad_summary, "summary")):
        assert failed.status == "FAILURE" and failed.error is not None
        assert (failed.error.stage, failed.error.code) == (stage, "config_error")
        assert "refused the API key (HTTP 401)" in failed.error.message
    assert (
        "serves enhance-model" in outputs["config check"] and "api_key=set (masked)" in outputs["config show"]
    )
    # Now search every output.
    outputs["results"] = "\n".join(r.model_dump_json() for r in (ok_result, bad_enhance, bad_summary))
    outputs["redis"] = redis_dump(rig.client)
    outputs["events"] = json.dumps(tap.events, default=str)
    for w in workers.values():
        outputs[f"worker {w.queue} output"] = w.log()
        for f in sorted(w.log_path.parent.glob("*.log")):
            outputs[f"worker {w.queue} {f.name}"] = f.read_text(errors="replace")
    # What was searched holds what matters: stored task arguments, task events, both log files.
    assert "celery-task-meta-" in outputs["redis"] and '"kwargs": {"job_id"' in outputs["redis"]
    assert any(e.get("type") == "task-received" for e in tap.events)
    assert any(e.get("type") == "task-failed" for e in tap.events)
    assert "app.log" in " ".join(outputs) and "errors.log" in " ".join(outputs)
    leaks = [f"{name}: {secret}" for name, text in outputs.items() for secret in PLANTED if secret in text]
    assert leaks == []
