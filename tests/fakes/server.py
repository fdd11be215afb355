"""A deterministic OpenAI-compatible HTTP server for tests and benchmarks, with fault injection.

Run it as a process (``tests/`` on the module path)::

    PYTHONPATH=tests python -m fakes.server --port 0 [--host 127.0.0.1] [--name A]
        [--model fake-model] [--api-key KEY] [--request-log FILE] [--max-model-len 4096]
        [--no-context-report] [--no-tokenize] [--accelerator STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]]

It binds, then prints exactly one line ``LISTENING <port>`` on stdout (flushed) so a fixture can
read the port; SIGTERM or SIGINT stop it cleanly. In-process, ``FakeOpenAIServer(...).start()``
serves from a background thread; from a fixture, ``fakes.server_process.FakeServerProcess(...)``
runs this command as a subprocess. Both expose ``port``, ``url``, ``base_url``
(``http://127.0.0.1:<port>/v1``), ``faults(rules)``, ``log()``, ``reset()``, ``stop()`` and the
context manager protocol.

The server itself uses only the standard library (``jsonschema``, when installed, self-checks the
JSON it generates). Connections are kept alive (HTTP/1.1) and each one is served by a daemon
thread, so load runs can push hundreds of requests per second through it. The routes are described
in ``handler``, the replies in ``replies``, the faults in ``faults`` and ``--accelerator`` in
``accelerator``; ``--no-tokenize`` removes ``POST /tokenize`` (404) and ``--no-context-report``
leaves ``max_model_len`` out of ``/v1/models``, like servers other than vLLM.

``GET /metrics`` counts ``fake:requests_total{path=...}``, ``fake:responses_total{path=...,status=...}``,
``fake:faults_total{kind=...}`` and ``fake:requests_in_flight``.

Control API (no auth, not logged, never faulted): ``GET /_log`` returns the request log, one entry
per API request with ``seq``, ``time``, ``server``, ``method``, ``path``, ``model``, ``auth``
(whether an Authorization header was sent; the key itself is never stored), ``max_tokens``,
``temperature``, ``has_response_format``, ``response_format_type``, ``regex``, ``messages``,
``prompt``, ``status`` (None if no answer was sent), ``fault``, ``finish_reason``, ``schema_error``
and ``duration``. With ``--request-log FILE`` every finished entry is also appended to FILE as one
JSON line. ``POST /_reset`` clears the log, the faults and the counters, and wakes hung requests.
``GET /_faults`` lists the rules with their remaining ``times``; ``POST /_faults`` appends a JSON
list of rules (or one rule).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from .accelerator import SimulatedAccelerator
from .calls import Call
from .faults import FaultRule, parse_rules
from .handler import HTTPServer
from .replies import Outcome


class FakeOpenAIServer:
    """The fake server, served from a background thread once started."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "fake",
        model: str = "fake-model",
        api_key: str | None = None,
        request_log: str | Path | None = None,
        max_model_len: int = 4096,
        report_context: bool = True,
        tokenize: bool = True,
        accelerator: SimulatedAccelerator | None = None,
    ) -> None:
        self.host = host
        self.name = name
        self.model = model
        self.accelerator = accelerator
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.report_context = report_context
        self.tokenize = tokenize
        self._requested_port = port
        self._request_log = Path(request_log) if request_log is not None else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Replaced on every reset, so hung requests wake up and later ones hang anew.
        self._wake = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._log: list[dict[str, Any]] = []
        self._rules: list[FaultRule] = []
        self._requests: dict[str, int] = {}
        self._responses: dict[tuple[str, str], int] = {}
        self._fault_hits: dict[str, int] = {}
        self._in_flight = 0
        self._seq = 0
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log_file: IO[str] | None = None
        self._port: int | None = None

    # -- lifecycle

    def start(self) -> Self:
        """Bind and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        if self._request_log is not None:
            self._log_file = self._request_log.open("a", encoding="utf-8")
        try:
            self._httpd = HTTPServer((self.host, self._requested_port), self)
        except BaseException:
            if self._log_file is not None:
                self._log_file.close()
            raise
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fake-openai-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, cut open connections, wake sleepers and join every thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        if self.accelerator is not None:
            self.accelerator.stop()
        with self._lock:
            self._wake.set()
            conns = list(self._conns)
        httpd.shutdown()
        for conn in conns:
            _shutdown_socket(conn)  # unblocks handlers idle on keep-alive connections
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> Self:
        return self.start() if self._httpd is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            stopping = self._stopping.is_set()
        if stopping:  # accepted while stop() was cutting connections
            _shutdown_socket(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- control (the same operations as the HTTP control API)

    def faults(self, rules: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Append fault rules (validated; raises ValueError on a bad rule)."""
        self._add_rules(parse_rules(rules if isinstance(rules, Mapping) else list(rules)))

    def _add_rules(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._rules.extend(rules)

    def fault_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]

    def log(self) -> list[dict[str, Any]]:
        """A copy of the request log."""
        entries: list[dict[str, Any]] = json.loads(self._log_json())  # a deep copy
        return entries

    def _log_json(self) -> str:
        with self._lock:
            return json.dumps(self._log)

    def reset(self) -> None:
        """Clear the log, the faults and the counters; wake hung requests."""
        with self._lock:
            self._wake.set()
            self._wake = threading.Event()
            self._log.clear()
            self._rules.clear()
            self._requests.clear()
            self._responses.clear()
            self._fault_hits.clear()
            self._seq = 0

    # -- bookkeeping

    def _count(self, path: str) -> None:
        with self._lock:
            self._requests[path] = self._requests.get(path, 0) + 1

    def _pick_fault(self, call: Call) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.take(call):
                    self._fault_hits[rule.kind] = self._fault_hits.get(rule.kind, 0) + 1
                    return rule
        return None

    def _open_entry(self, call: Call, *, auth: bool) -> dict[str, Any]:
        fmt = call.response_format
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            call.seq = self._seq
            entry: dict[str, Any] = {
                "seq": self._seq,
                "time": time.time(),
                "server": self.name,
                "method": call.method,
                "path": call.path,
                "model": call.model,
                "auth": auth,
                "max_tokens": call.max_tokens,
                "temperature": call.body.get("temperature"),
                "has_response_format": fmt is not None,
                "response_format_type": fmt.get("type") if fmt is not None else None,
                "regex": call.regex,
                "messages": call.messages,
                "prompt": call.prompt,
                "status": None,
                "fault": None,
                "finish_reason": None,
                "schema_error": None,
                "duration": None,
            }
            self._log.append(entry)
        return entry

    def _close_entry(self, entry: dict[str, Any], outcome: Outcome) -> None:
        with self._lock:
            self._in_flight -= 1
            entry["status"] = outcome.status
            entry["fault"] = outcome.fault
            entry["finish_reason"] = outcome.finish_reason
            entry["schema_error"] = outcome.schema_error
            entry["duration"] = round(time.time() - entry["time"], 6)
            key = (entry["path"], str(outcome.status or 0))
            self._responses[key] = self._responses.get(key, 0) + 1
            if self._log_file is not None:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()

    def metrics_text(self) -> str:
        """Prometheus text exposition of the counters."""
        lines = ["# TYPE fake:requests_total counter"]
        with self._lock:
            lines += [
                f'fake:requests_total{{path="{_label(p)}"}} {n}' for p, n in sorted(self._requests.items())
            ]
            lines.append("# TYPE fake:responses_total counter")
            lines += [
                f'fake:responses_total{{path="{_label(p)}",status="{s}"}} {n}'
                for (p, s), n in sorted(self._responses.items())
            ]
            lines.append("# TYPE fake:faults_total counter")
            lines += [f'fake:faults_total{{kind="{k}"}} {n}' for k, n in sorted(self._fault_hits.items())]
            lines += [
                "# TYPE fake:requests_in_flight gauge",
                f"fake:requests_in_flight {self._in_flight}",
            ]
        acc = self.accelerator
        if acc is not None:
            lines += [
                "# TYPE fake:accelerator_tokens_total counter",
                f"fake:accelerator_tokens_total {acc.tokens}",
                "# TYPE fake:accelerator_steps_total counter",
                f"fake:accelerator_steps_total {acc.steps}",
                "# TYPE fake:accelerator_batch_total counter",
                f"fake:accelerator_batch_total {acc.batch_total}",
            ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _shutdown_socket(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--name", default="fake", help="shown in logs and reply ids")
    parser.add_argument("--model", default="fake-model", help="the one served model name")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--request-log", default=None, help="append each request as a JSON line")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--no-context-report", action="store_true", help="no max_model_len in /v1/models")
    parser.add_argument("--no-tokenize", action="store_true", help="no POST /tokenize route")
    parser.add_argument(
        "--accelerator", default=None, help="STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]: pace replies like a GPU"
    )
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        args.host,
        args.port,
        name=args.name,
        model=args.model,
        api_key=args.api_key,
        request_log=args.request_log,
        max_model_len=args.max_model_len,
        report_context=not args.no_context_report,
        tokenize=not args.no_tokenize,
        accelerator=SimulatedAccelerator.parse(args.accelerator) if args.accelerator else None,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"LISTENING {server.port}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
