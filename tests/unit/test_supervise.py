"""scripts/lib/supervise.sh with small shell children: what is restarted, what is not, how it stops.

(tests/integration/test_rel_supervise.py runs it with real pools; the systemd unit the docs ship is
checked here too.)
"""

from __future__ import annotations

import getpass
import grp
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = ROOT / "scripts" / "lib" / "supervise.sh"
FAST = {"MAIE_RESTART_BACKOFF_MIN": "0", "MAIE_RESTART_BACKOFF_MAX": "1"}


def supervise(child: str, tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    """The supervisor running `bash -c CHILD`, its output in tmp_path/out."""
    with open(tmp_path / "out", "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(SUPERVISE), "worker-test", "bash", "-c", child],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAST, **env},
            text=True,
            cwd=tmp_path,
        )


def wait_until(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def starts(tmp_path: Path) -> int:
    path = tmp_path / "starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


# Each start appends a line to `starts`; the first two exit 1, then it waits for SIGTERM and
# exits 0 on it, as Celery does on a warm shutdown.
CRASHES_TWICE = (
    'echo start >> starts; [ "$(wc -l < starts)" -le 2 ] && exit 1; '
    "trap 'echo stopping >> starts-term; exit 0' TERM; touch trapped; sleep 600 & wait"
)


def test_a_crashing_child_is_restarted_and_sigterm_stops_it_for_good(tmp_path: Path) -> None:
    proc = supervise(CRASHES_TWICE, tmp_path)
    wait_until("the third start", lambda: starts(tmp_path) == 3)
    out = (tmp_path / "out").read_text()
    restarts = r"supervise worker-test: exited unexpectedly \(status 1\) after \d+ s; restart (\d)"
    assert re.findall(restarts, out) == ["1", "2"]
    wait_until("the child's TERM trap", lambda: (tmp_path / "trapped").exists())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0  # the child's own status: a clean, asked-for stop
    assert (tmp_path / "starts-term").read_text() == "stopping\n"
    time.sleep(1.5)  # longer than the backoff: nothing comes back
    assert starts(tmp_path) == 3


def test_a_killed_child_is_restarted(tmp_path: Path) -> None:
    proc = supervise("echo $$ >> starts; exec sleep 600", tmp_path)
    try:
        wait_until("the first start", lambda: starts(tmp_path) == 1)
        os.kill(int((tmp_path / "starts").read_text().split()[0]), signal.SIGKILL)
        wait_until("the restart", lambda: starts(tmp_path) == 2)
        assert "exited unexpectedly (signal 9 (KILL))" in (tmp_path / "out").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize("status", [0, 2])
def test_a_clean_exit_or_a_usage_error_is_not_restarted(tmp_path: Path, status: int) -> None:
    proc = supervise(f"echo start >> starts; exit {status}", tmp_path)
    assert proc.wait(30) == status
    assert starts(tmp_path) == 1
    assert f"exited with status {status}" in (tmp_path / "out").read_text()
    assert "not restarted" in (tmp_path / "out").read_text()


def test_sigterm_during_the_backoff_stops_at_once(tmp_path: Path) -> None:
    proc = supervise("echo start >> starts; exit 1", tmp_path, MAIE_RESTART_BACKOFF_MIN="60")
    wait_until("the backoff", lambda: "restart 1 in 60 s" in (tmp_path / "out").read_text())
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - started < 10
    assert starts(tmp_path) == 1
    assert "stopped while waiting to restart" in (tmp_path / "out").read_text()


def test_bad_backoff_settings_are_refused(tmp_path: Path) -> None:
    proc = supervise("exit 0", tmp_path, MAIE_RESTART_BACKOFF_MAX="soon")
    assert proc.wait(30) == 2
    assert "take whole seconds" in (tmp_path / "out").read_text()


def test_the_documented_systemd_unit_runs_the_pool_unsupervised_and_verifies(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "OPERATIONS.md").read_text()
    unit = re.search(r"`/etc/systemd/system/maie-worker@\.service`:\n\n```ini\n(.*?)```", docs, re.S)
    assert unit is not None
    text = unit.group(1)
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert fields["ExecStart"] == "/opt/maie/scripts/start-worker.sh %i --no-supervise"
    assert (fields["Type"], fields["KillSignal"], fields["Restart"]) == ("simple", "SIGTERM", "always")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    local = (
        text.replace("/opt/maie", str(ROOT))
        .replace("User=maie", f"User={getpass.getuser()}")
        .replace("Group=maie", f"Group={grp.getgrgid(os.getgid()).gr_name}")
    )
    (tmp_path / "maie-worker@.service").write_text(local)
    proc = subprocess.run(
        [analyze, "verify", "./maie-worker@enhance.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
