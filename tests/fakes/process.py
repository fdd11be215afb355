"""Processes that tests and benchmarks start and stop: the fake server, workers, `maie api`, Flower,
redis-server, vLLM. One way to start them (output to a log file), to wait until they answer, and to
stop them (a signal, a warm shutdown by default, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send `sig` (a warm shutdown by default), wait up to `timeout` s, then kill."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """`sig` to the process group of `proc` (started in a session of its own), SIGKILL to what is
    left after `timeout`: children (vLLM engine cores) may outlive their leader."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """`sig`, up to `timeout` s to exit, then SIGKILL. A group is stopped once: its id may be
        reused after."""
        if self._popen is None or self._stopped:
            return
        if self.group:
            self._stopped = True
            stop_group(self._popen, sig, timeout)
        else:
            stop_process(self._popen, sig, timeout)

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
