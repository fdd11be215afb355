"""The workers' logs: LOG_DIR/app.log and LOG_DIR/errors.log, a job id on a job's lines, no transcript."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import Worker
from fakes.server_process import FakeServerProcess

from maie import submit
from maie.settings import load_settings

TRANSCRIPT = (
    "Cartographer: the lighthouse ledger lists eleven marmalade shipments\n"
    "Archivist: and the zeppelin manifest mentions a twelfth one\n"
)
SECRET_WORDS = ("lighthouse", "marmalade", "zeppelin", "manifest", "Cartographer")


def log_dir(dual: dict[str, Worker]) -> Path:
    dirs = {w.env["LOG_DIR"] for w in dual.values()}
    assert len(dirs) == 1
    return Path(dirs.pop())


def wait_for_lines(path: Path, pattern: str, count: int = 1, timeout: float = 30) -> list[str]:
    """Lines of `path` matching `pattern`, once there are `count` of them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        lines = [line for line in text.splitlines() if re.search(pattern, line)]
        if len(lines) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(lines) < count:
        pytest.fail(f"{path.name}: {count} line(s) matching {pattern!r} expected, got {lines}")
    return lines


def test_a_jobs_lines_carry_its_id_and_never_its_text(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    job = submit(TRANSCRIPT, settings=load_settings(env_file=None))
    result = job.wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    app_log = log_dir(dual) / "app.log"
    tagged = rf"\[job={job.id}\]"
    enhanced = wait_for_lines(app_log, rf"INFO {tagged} .* maie\.tasks: chunk 0 enhanced")
    summarised = wait_for_lines(app_log, rf"INFO {tagged} .* maie\.tasks: summary done")
    assert enhanced and summarised
    # Celery's own lines about the job's tasks, logged from inside them, carry the id too.
    wait_for_lines(app_log, rf"{tagged} .*celery\.app\.trace: Task maie\.summarize\[{job.id}\] succeeded")
    text = app_log.read_text(errors="replace") + (log_dir(dual) / "errors.log").read_text(errors="replace")
    for word in SECRET_WORDS:
        assert word.lower() not in text.lower(), f"transcript word {word!r} in the logs"
    for secret in ("sk-test-enhance-key", "sk-test-summary-key"):
        assert secret not in text


def test_app_log_says_what_each_pool_bound(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    app_log = log_dir(dual) / "app.log"
    enhance = wait_for_lines(app_log, r"LLM enhance bound: ")
    summary = wait_for_lines(app_log, r"LLM summary bound: ")
    assert any(
        f"backend=vllm_server endpoint={server_a.base_url} model=enhance-model" in line for line in enhance
    ), enhance
    assert any(
        f"backend=vllm_server endpoint={server_b.base_url} model=summary-model" in line for line in summary
    ), summary


def test_a_failed_job_reaches_errors_log(dual: dict[str, Worker], server_a: FakeServerProcess) -> None:
    server_a.faults([{"kind": "status", "status": 400, "times": 1}])
    job = submit(TRANSCRIPT, settings=load_settings(env_file=None))
    result = job.wait(timeout=60)
    assert result.status == "FAILURE" and result.error is not None
    errors_log = log_dir(dual) / "errors.log"
    lines = wait_for_lines(errors_log, rf"ERROR \[job={job.id}\] .*maie\.enhance_chunk failed: .*HTTP 400")
    assert "chunk 0" in lines[0]
    # errors.log holds errors only; app.log has the same line too.
    assert all(
        " ERROR " in line or not re.match(r"\d{4}-", line) for line in errors_log.read_text().splitlines()
    )
    wait_for_lines(log_dir(dual) / "app.log", rf"ERROR \[job={job.id}\] .*maie\.enhance_chunk failed")
    text = errors_log.read_text(errors="replace")
    for word in SECRET_WORDS:
        assert word.lower() not in text.lower()
