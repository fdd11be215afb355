"""The fake server as a subprocess (``python -m fakes.server``), for fixtures and benchmarks.

The control methods talk to the control API with urllib, so they work from any process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .process import ManagedProcess

# The directory holding this package: the subprocess imports it from there.
_TESTS = Path(__file__).resolve().parent.parent


class FakeServerProcess:
    """``python -m fakes.server`` with these options; ready once it printed ``LISTENING <port>``.

    Its output goes to a temporary file, removed when it stops; ``log()`` is the request log.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        request_log: str | Path | None = None,
        max_model_len: int | None = None,
        report_context: bool = True,
        tokenize: bool = True,
        accelerator: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.requested_port = port  # 0: any free port; a fixed one lets a restart come back on it
        self.name = name
        self.model = model
        self.api_key = api_key
        self.request_log = request_log
        self.max_model_len = max_model_len
        self.report_context = report_context
        self.tokenize = tokenize
        self.accelerator = accelerator
        self.startup_timeout = startup_timeout
        self._port: int | None = None
        self._process: ManagedProcess | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "fakes.server", "--port", str(self.requested_port), "--host", self.host]
        options = {
            "--name": self.name,
            "--model": self.model,
            "--api-key": self.api_key,
            "--request-log": self.request_log,
            "--max-model-len": self.max_model_len,
            "--accelerator": self.accelerator,
        }
        for flag, value in options.items():
            if value is not None:
                cmd += [flag, str(value)]
        if not self.report_context:
            cmd.append("--no-context-report")
        if not self.tokenize:
            cmd.append("--no-tokenize")
        return cmd

    def start(self) -> Self:
        """Start the subprocess and wait for its ``LISTENING <port>`` line."""
        if self._process is not None:
            raise RuntimeError("server already started")
        fd, output = tempfile.mkstemp(prefix="fake-openai-", suffix=".out")
        os.close(fd)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": f"{_TESTS}{os.pathsep}{path}" if path else str(_TESTS)}
        self._process = ManagedProcess("fake OpenAI server", self.command(), Path(output), env=env)
        try:
            self._process.start().wait_ready(self._listening, self.startup_timeout, poll=0.02)
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        assert self._process is not None
        for line in self._process.log().splitlines():
            if line.startswith("LISTENING "):
                self._port = int(line.split()[1])
                return True
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the subprocess, wait for it, and remove its output file."""
        process, self._process = self._process, None
        if process is not None:
            process.stop(timeout=timeout)
            process.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("server not running")
        return self._process.pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read().decode(errors="replace")
            raise ValueError(f"{method} {path} failed: HTTP {exc.code}: {detail}") from None

    def faults(self, rules: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Append fault rules (raises ValueError if the server rejects them)."""
        self._call("POST", "/_faults", rules if isinstance(rules, Mapping) else list(rules))

    def fault_rules(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_faults")
        return result

    def log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_log")
        return result

    def reset(self) -> None:
        self._call("POST", "/_reset", {})
