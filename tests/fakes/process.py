"""Processes that tests and benchmarks start and stop: the fake server, workers, `maie api`, Flower,
`maie metrics`, redis-server, vLLM. One way to start them (output to a log file), to wait until they
answer or print a line, and to stop them, alone or with their process group (a signal, a warm
shutdown by default, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedProcess:
    """`cmd` as a process of its own, its stdout and stderr in `log_path`.

    With `group`, it runs in a session of its own and stop() signals the whole process group.
    With `append`, a restart adds to the log instead of starting it anew.
    """

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        group: bool = False,
        append: bool = False,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.group = group
        self.append = append
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self) -> Self:
        if self._popen is not None and self._popen.poll() is None:
            raise RuntimeError(f"{self.name} already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab" if self.append else "wb") as out:
            self._popen = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL if self.group else None,
                start_new_session=self.group,
            )
        self._stopped = False
        return self

    def wait_ready(self, ready: Callable[[], object], timeout: float, poll: float = 0.2) -> Self:
        """Poll `ready` until it is truthy; if the process exits or `timeout` s pass, kill it and
        raise with the end of its log."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log(3000)}")
            if ready():
                return self
            if time.monotonic() > deadline:
                break
            time.sleep(poll)
        tail = self.log(3000)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{tail}")

    def wait_logged(self, marker: str, timeout: float, poll: float = 0.2) -> Self:
        """Ready once `marker` appears in its output (a Celery worker prints " ready.")."""
        return self.wait_ready(lambda: marker in self.log(), timeout, poll)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """`sig` (a warm shutdown by default), up to `timeout` s to exit, then SIGKILL."""
        if self._popen is None or self._stopped:
            return
        self.send(sig)
        self.reap(timeout)

    def send(self, sig: int) -> None:
        """`sig` to the process, or with `group` to its whole process group, while it runs."""
        proc = self.proc
        if proc.poll() is not None:
            return
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid
        else:
            proc.send_signal(sig)

    def reap(self, timeout: float) -> None:
        """Up to `timeout` s for the process to exit, then SIGKILL. With `group`, SIGKILL to what
        is left of the group even when the leader exited (vLLM engine cores may outlive it), and
        only once: the group id may be reused after."""
        proc = self.proc
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        if self.group:
            self._stopped = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} not started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:] if tail else text

    def __enter__(self) -> Self:
        return self if self.alive() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all(processes: Iterable[ManagedProcess], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """`sig` to every live process at once, then wait for each, SIGKILL after `timeout` s in all:
    pools shut down side by side, not one after the other."""
    live = [p for p in processes if p.alive()]
    for p in live:
        p.send(sig)
    deadline = time.monotonic() + timeout
    for p in live:
        p.reap(max(0.1, deadline - time.monotonic()))
