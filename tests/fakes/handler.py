"""The fake's HTTP layer: one daemon thread per kept-alive connection, routing, auth and faults.

``GET /v1/models``, ``GET /health``, ``GET /metrics``, ``POST /v1/chat/completions``,
``POST /v1/completions`` and ``POST /tokenize`` (no ``/v1``, as vLLM; ``{"count", "max_model_len",
"tokens"}`` for a ``prompt`` or ``messages``). A wrong or missing ``Authorization: Bearer <key>``
(when the server has a key) gives 401, a model other than the served one 404, a malformed body
400; errors use the OpenAI envelope. The control routes (``/_log``, ``/_reset``, ``/_faults``) take
no auth, are not logged and are never faulted.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .calls import CHAT_PATH, COMPLETIONS_PATH, GENERATION_PATHS, MODELS_PATH, TOKENIZE_PATH, Call
from .faults import HANG_SECONDS, POLL_SECONDS, parse_rules
from .replies import Outcome, completion, context_error, error_body, failure, models_body, phrase

if TYPE_CHECKING:
    from .server import FakeOpenAIServer


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog (5) makes bursts of new connections wait for SYN retries.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeOpenAIServer) -> None:
        self.fake = fake
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Daemon threads are not tracked by socketserver; track them so stop() can join them.
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="fake-openai-conn"
        )
        with self.fake._lock:
            self.fake._threads.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError) or self.fake._stopping.is_set():
            return  # a client that went away, or connections cut by stop(): not news
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so load runs reuse connections
    disable_nagle_algorithm = True  # headers and body are separate writes
    server_version = "fake-openai/1.0"
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client is gone; nothing left to flush
        finally:
            self.server.fake._untrack(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one stderr line per request would dominate a load run

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing

    def _send(
        self,
        status: int,
        payload: Any,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _client_gone(self) -> bool:
        try:
            data: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return data == b""

    def _sleep(self, seconds: float, *, until_reset: bool) -> bool:
        """Wait `seconds`; False if stopped, reset (when `until_reset`) or the client left."""
        fake = self.server.fake
        wake = fake._wake if until_reset else fake._stopping
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if wake.wait(min(remaining, POLL_SECONDS)) or fake._stopping.is_set():
                return False
            if self._client_gone():
                return False
        return True

    # -- routing

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(400, error_body(400, "bad Content-Length"))
            return
        if path.startswith("/_"):
            self._control(method, path, raw)
            return
        fake._count(path)
        if path == "/health" and method == "GET":
            self._send(200, {"status": "ok", "name": fake.name})
        elif path == "/metrics" and method == "GET":
            self._send(200, fake.metrics_text().encode(), content_type="text/plain; version=0.0.4")
        elif (method, path) in (
            ("GET", MODELS_PATH),
            ("POST", CHAT_PATH),
            ("POST", COMPLETIONS_PATH),
        ) or ((method, path) == ("POST", TOKENIZE_PATH) and fake.tokenize):
            self._api(Call.parse(method, path, raw))
        elif path in (MODELS_PATH, CHAT_PATH, COMPLETIONS_PATH, "/health", "/metrics"):
            self._send(405, error_body(405, f"{method} is not allowed on {path}"))
        else:
            self._send(404, error_body(404, f"no route for {method} {path}"))

    def _control(self, method: str, path: str, raw: bytes) -> None:
        fake = self.server.fake
        if (method, path) == ("GET", "/_log"):
            self._send(200, fake._log_json().encode())
        elif (method, path) == ("POST", "/_reset"):
            fake.reset()
            self._send(200, {"reset": True})
        elif (method, path) == ("GET", "/_faults"):
            self._send(200, fake.fault_rules())
        elif (method, path) == ("POST", "/_faults"):
            try:
                rules = parse_rules(json.loads(raw or b"null"))
            except ValueError as exc:
                self._send(400, error_body(400, f"bad fault rules: {exc}"))
                return
            fake._add_rules(rules)
            self._send(200, {"added": len(rules)})
        else:
            self._send(404, error_body(404, f"no control route for {method} {path}"))

    def _api(self, call: Call) -> None:
        fake = self.server.fake
        entry = fake._open_entry(call, auth=self.headers.get("Authorization") is not None)
        outcome = Outcome()
        try:
            answer = self._serve(call, outcome)
        finally:
            # Logged before the answer leaves, so a client that got it also finds it in the log.
            fake._close_entry(entry, outcome)
        if answer is None:
            self.close_connection = True  # drop, hang, or a delay cut short: never answer
            return
        status, payload = answer
        headers = {"Retry-After": "0"} if status == 429 else None
        self._send(status, payload, headers=headers)

    def _serve(self, call: Call, outcome: Outcome) -> tuple[int, dict[str, Any]] | None:
        """The answer to send (status, JSON body), or None to close without answering."""
        fake = self.server.fake
        if fake.api_key is not None:
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                # Unlike the real API, never echo the key, not even masked.
                return failure(401, "Incorrect API key provided.", outcome)
        if call.error is not None:
            return failure(400, call.error, outcome)
        if call.path != MODELS_PATH and call.model is not None and call.model != fake.model:
            return failure(404, f"The model `{call.model}` does not exist.", outcome)
        rule = fake._pick_fault(call)
        kind = rule.kind if rule is not None else None
        outcome.fault = kind
        if call.path == TOKENIZE_PATH:
            outcome.status = 200
            n = call.context_tokens
            return 200, {"count": n, "max_model_len": fake.max_model_len, "tokens": list(range(n))}
        if call.path in GENERATION_PATHS:
            refused = context_error(call, fake.max_model_len)
            if refused is not None:
                return failure(400, refused, outcome)
        if rule is not None and kind == "status":
            message = f"injected fault: HTTP {rule.status} ({phrase(rule.status)})"
            return failure(rule.status, message, outcome)
        if kind == "drop":
            return None
        if kind == "hang":
            self._sleep(HANG_SECONDS, until_reset=True)
            return None  # whatever ended the wait
        if rule is not None and kind == "delay":
            if not self._sleep(rule.seconds, until_reset=False):
                return None  # stopped, or the client gave up
        outcome.status = 200
        if call.path == MODELS_PATH:
            return 200, models_body(fake.model, fake.max_model_len if fake.report_context else None)
        body = completion(call, kind, outcome, name=fake.name, model=fake.model)
        if fake.accelerator is not None and call.path in GENERATION_PATHS:
            if not fake.accelerator.generate(body["usage"]["completion_tokens"], fake._wake):
                return None  # reset or stopped while generating
        return 200, body
