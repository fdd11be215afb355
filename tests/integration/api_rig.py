"""The HTTP API as users start it (`maie api`, a uvicorn subprocess), for the API tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from test_reliability import free_port

KEY = "test-api-key-0123456789abcdef0123456789"


class ApiServer:
    """`maie api --port P` in its own process, with `env`; stop() ends it (SIGTERM)."""

    def __init__(self, env: dict[str, str], workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "api.out"
        maie = str(Path(sys.executable).parent / "maie")
        cmd = [maie, "api", "--host", "127.0.0.1", "--port", str(self.port), *args]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request never
        # goes out on a connection the server is closing at that moment.
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=60,
            headers={"X-API-Key": KEY},
            limits=httpx.Limits(keepalive_expiry=1.0),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90) -> ApiServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"maie api exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.client.get("/openapi.json").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"maie api not ready in {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait_status(self, task_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        """Poll GET /v1/status until the job's status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/v1/status/{task_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {task_id} still {body['status']} after {timeout} s: {body}")
            time.sleep(0.1)
