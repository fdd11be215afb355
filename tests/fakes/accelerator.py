"""A simulated GPU doing continuous batching, to pace the fake's replies (``--accelerator``).

With ``--accelerator STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]`` every generation request is paced: one
engine thread takes a step every ``STEP_MS + PER_SEQ_MS × running`` milliseconds, and each step
emits one token (a word of the reply, at least one) for every running request; at most
``MAX_BATCH`` requests run (default 256), later ones wait for a slot. Time per token thus grows
slowly with the batch while tokens per second grow almost linearly with it, as on a GPU, and the
server spends almost no CPU doing it (the engine thread sleeps between steps). ``/metrics`` adds
``fake:accelerator_tokens_total``, ``fake:accelerator_steps_total`` and
``fake:accelerator_batch_total`` (the running requests summed over steps: over the steps, the mean
batch). Faults apply before the pacing.
"""

from __future__ import annotations

import threading
import time

from .faults import POLL_SECONDS


class _Generation:
    __slots__ = ("remaining", "done")

    def __init__(self, tokens: int) -> None:
        self.remaining = max(1, tokens)
        self.done = threading.Event()


class SimulatedAccelerator:
    """Continuous batching on a simulated GPU (see the module docstring)."""

    def __init__(self, step_ms: float, per_seq_ms: float = 0.0, max_batch: int = 256) -> None:
        if step_ms <= 0 or per_seq_ms < 0 or max_batch < 1:
            raise ValueError("--accelerator needs STEP_MS > 0, PER_SEQ_MS >= 0 and MAX_BATCH >= 1")
        self.step_ms, self.per_seq_ms, self.max_batch = step_ms, per_seq_ms, max_batch
        self.tokens = self.steps = self.batch_total = 0
        self._cond = threading.Condition()
        self._waiting: list[_Generation] = []
        self._running: list[_Generation] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="accelerator", daemon=True)
        self._thread.start()

    @classmethod
    def parse(cls, spec: str) -> SimulatedAccelerator:
        parts = [p.strip() for p in spec.split(",")]
        if not 1 <= len(parts) <= 3:
            raise ValueError("--accelerator takes STEP_MS[,PER_SEQ_MS[,MAX_BATCH]]")
        per_seq = float(parts[1]) if len(parts) > 1 else 0.0
        return cls(float(parts[0]), per_seq, int(parts[2]) if len(parts) > 2 else 256)

    def generate(self, tokens: int, wake: threading.Event) -> bool:
        """Block until `tokens` tokens are generated (True), or `wake` is set first (False)."""
        job = _Generation(tokens)
        with self._cond:
            self._waiting.append(job)
            self._cond.notify()
        while not job.done.wait(POLL_SECONDS):
            if wake.is_set():
                return False
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._running or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                free = self.max_batch - len(self._running)
                self._running += self._waiting[:free]
                del self._waiting[:free]
                batch = len(self._running)
            time.sleep((self.step_ms + self.per_seq_ms * batch) / 1000.0)
            with self._cond:
                self.steps += 1
                self.batch_total += batch
                self.tokens += batch
                finished = [g for g in self._running if g.remaining <= 1]
                for g in self._running:
                    g.remaining -= 1
                self._running = [g for g in self._running if g.remaining > 0]
            for g in finished:
                g.done.set()
