"""A dead endpoint that counts: while an LLM server is down, a listener on its port resets every
connection (as a server that is still starting up does) and counts the attempts, so tests and
benchmarks can check that the pools probe a dead endpoint instead of hammering it."""

from __future__ import annotations

import socket
import struct
import threading


class ResettingListener:
    """Accepts connections on 127.0.0.1:`port` and resets each at once, counting them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resetting-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.count += 1
            # Linger 0: close() sends a reset, not a graceful end of the connection.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
