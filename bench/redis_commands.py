"""Redis commands per chunk task: what one enhance_chunk costs the broker, the result backend and the
job store, counted with Redis' own MONITOR.

    .venv/bin/python bench/redis_commands.py [--chunks 64] [--small 4] [--label NAME] [--no-record]

Both pools run as users start them (scripts/start-worker.sh enhance|summary) against an instant
fake LLM (tests/fakes/server.py). While a MONITOR connection records every command sent to the
benchmark's Redis DB (other DBs are ignored), the run does, one after another:

  idle    nothing for a few seconds: the pools' polling (BRPOP timeouts, the unacked sweep,
          heartbeats), as commands per second
  small   an enhance-only job of S chunks
  large   an enhance-only job of N chunks

Per chunk = (large − small) / (N − S), each window's polling (idle rate × its duration) taken out
first, so what the job costs once (submission, the chord body, the result) cancels out. Commands
are grouped by what they touch: the job store (maie:job:*), Celery's task results and states
(celery-task-meta-*), the chord counter, the broker's queues and unacked bookkeeping, events and
result notifications (PUBLISH), and MULTI/EXEC around transactions. Round trips are estimated from the
order and times MONITOR gives: a transaction (MULTI...EXEC) and a Lua script count once, and so do
one client's commands back to back less than 0.2 ms apart (a pipeline sent in one write).
Counts do not depend on machine load (only the idle correction does, a little).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common as c

MODEL = "bench-model"
STOP = "maie-bench-monitor-stop"
IDLE_SECONDS = 5.0
# Commands of one client this close together, with no other client's command between them, were
# sent in one write (a pipeline): a reply and a new request take longer than this on loopback.
PIPELINE_GAP = 0.0002


@dataclass
class Window:
    """The commands of one phase."""

    seconds: float = 0.0
    # (command, first argument, whether a Lua script sent it)
    commands: list[tuple[str, str, bool]] = field(default_factory=list)
    # (client port, time) of each command, for grouping pipelines into round trips
    origins: list[tuple[str, float]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # client port and command, cut short

    def by_group(self) -> Counter[str]:
        return Counter(group(cmd, key) for cmd, key, _ in self.commands)

    def by_command(self) -> Counter[str]:
        return Counter(cmd for cmd, _, _ in self.commands)

    def round_trips(self) -> int:
        """Commands a client had to wait for: a transaction, a Lua script and a pipeline (the same
        client's commands back to back, less than PIPELINE_GAP apart) count once."""
        trips, in_multi = 0, False
        last: tuple[str, float] = ("", 0.0)
        for (cmd, _, lua), (port, at) in zip(self.commands, self.origins, strict=True):
            if lua:
                continue  # inside EVALSHA: the script's call was the round trip
            pipelined = port == last[0] and at - last[1] < PIPELINE_GAP
            last = (port, at)
            if cmd == "MULTI":
                in_multi, trips = True, trips + 1
            elif cmd in ("EXEC", "DISCARD"):
                in_multi = False
            elif not in_multi and not pipelined:
                trips += 1
        return trips


def group(cmd: str, key: str) -> str:
    if cmd in ("MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"):
        return "transaction markers (MULTI/EXEC)"
    if cmd == "PUBLISH":
        return "PUBLISH: events" if "celeryev" in key else "PUBLISH: result notifications"
    if key.startswith("maie:"):
        return "job store (maie:job:*)"
    if key.startswith("celery-task-meta-"):
        return "task results and states (celery-task-meta-*)"
    if cmd == "EVALSHA" or key.startswith(("celery-taskset-meta-", "chord-unlock")):
        return "chord counter (Celery's Lua script and what it runs)"
    if key.startswith(("unacked", "_kombu")) or key in ("enhance", "summary") or cmd.startswith("BRPOP"):
        return "broker: queues, unacked, bindings"
    return f"other ({cmd})"


class Monitor:
    """A MONITOR connection in a thread, recording the commands sent to one DB."""

    def __init__(self, url: str, db: int) -> None:
        import redis

        self._db = db
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._lock = threading.Lock()
        self._current: Window | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")

    def _run(self) -> None:
        with self._client.monitor() as m:
            self._ready.set()
            for event in m.listen():
                command = str(event.get("command", ""))
                if STOP in command:
                    break
                if int(event.get("db", -1)) != self._db:
                    continue
                parts = command.split(" ", 2)
                name = parts[0].upper()
                key = parts[1].strip("'\"") if len(parts) > 1 else ""
                with self._lock:
                    if self._current is not None:
                        lua = event.get("client_type") == "lua"
                        self._current.commands.append((name, key, lua))
                        origin = "lua" if lua else str(event.get("client_port"))
                        self._current.origins.append((origin, float(event.get("time", 0.0))))
                        self._current.raw.append(f"{event.get('client_port')} {command[:160]}")
        self._done.set()

    def record(self) -> Window:
        window = Window()
        with self._lock:
            self._current = window
        return window

    def stop_recording(self, window: Window, seconds: float) -> None:
        with self._lock:
            self._current = None
        window.seconds = seconds

    def close(self, client: Any) -> None:
        client.echo(STOP)
        self._done.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=64)
    p.add_argument("--small", type=int, default=4)
    p.add_argument("--label", default="", help="names the code measured in the recorded section")
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument("--dump", default=None, help="write the large job's commands to this file")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    from fakes.server_process import FakeServerProcess

    info_before = c.machine()
    print(f"redis_commands: {c.machine_line(info_before)}", flush=True)
    db = int(c.REDIS_URL.rsplit("/", 1)[1])
    with c.temp_dir("maie-redis-commands-") as tmp, c.bench_redis() as client, c.Procs() as procs:
        fake = FakeServerProcess(name="bench", model=MODEL)
        procs.enter_context(fake)
        enhance = c.start_server_pools(procs, fake.base_url, MODEL, tmp)
        settings = c.bench_settings(chunk_max_tokens=36)
        c.run_job(c.transcript(8, seed=99), settings, timeout=a.timeout)  # warm-up

        monitor = Monitor(c.REDIS_URL, db)
        windows: dict[str, Window] = {}
        try:
            w = monitor.record()
            time.sleep(IDLE_SECONDS)
            monitor.stop_recording(w, IDLE_SECONDS)
            windows["idle"] = w
            for name, n, seed in (("small", a.small, 3), ("large", a.chunks, 4)):
                text = c.transcript(n, seed=seed)
                if len(c.chunk_texts(text, settings)) != n:
                    raise SystemExit(f"expected {n} chunks")
                w = monitor.record()
                # Polled slowly: the caller's own reads are not what a chunk costs.
                seconds, _ = c.run_job(text, settings, timeout=a.timeout, poll=0.5)
                time.sleep(1.0)  # the last acks and events of the job
                monitor.stop_recording(w, seconds + 1.0)
                windows[name] = w
                print(f"redis_commands: {name}: {n} chunks, {len(w.commands)} commands", flush=True)
        finally:
            monitor.close(client)
        c.check_alone()
        concurrency = c.pool_concurrency(enhance)

    if a.dump:
        Path(a.dump).write_text("\n".join(windows["large"].raw) + "\n")
    lines = report(a, windows, concurrency)
    print("\n".join(lines))
    if not a.no_record:
        title = "Redis commands per chunk task" + (f" ({a.label})" if a.label else "")
        c.record(title, lines, info_before)
        print(f"redis_commands: recorded in {c.RESULTS.relative_to(c.ROOT)}")
    return 0


def per_chunk(windows: dict[str, Window], a: argparse.Namespace, count: Any) -> dict[str, float]:
    """Commands per chunk by `count(window)`'s keys, polling taken out."""
    idle, small, large = windows["idle"], windows["small"], windows["large"]
    rate = {k: v / idle.seconds for k, v in count(idle).items()}
    out: dict[str, float] = {}
    keys: Iterable[str] = set(count(small)) | set(count(large))
    for key in keys:
        s = count(small).get(key, 0) - rate.get(key, 0.0) * small.seconds
        b = count(large).get(key, 0) - rate.get(key, 0.0) * large.seconds
        out[key] = (b - s) / (a.chunks - a.small)
    return out


def report(a: argparse.Namespace, windows: dict[str, Window], concurrency: str) -> list[str]:
    groups = per_chunk(windows, a, Window.by_group)
    commands = per_chunk(windows, a, Window.by_command)
    trips = per_chunk(windows, a, lambda w: Counter({"trips": w.round_trips()}))["trips"]
    total = sum(groups.values())
    idle = windows["idle"]
    lines = [
        f"- LLM: tests/fakes/server.py (instant); Redis {c.REDIS_URL}, counted with MONITOR (this DB only); "
        f"enhance and summary pools via scripts/start-worker.sh (threads, concurrency {concurrency})",
        f"- work: enhance-only jobs of {a.small} and {a.chunks} one-turn chunks; per chunk = difference "
        f"over {a.chunks - a.small} chunks, the pools' polling ({len(idle.commands) / idle.seconds:.1f} "
        f"commands/s when idle) taken out",
        "",
        "| what the commands touch | commands per chunk |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.05),
        f"| **total** | **{total:.1f}** |",
        "",
        "- round trips per chunk (a transaction, a Lua script, a pipeline count once; estimated from "
        f"MONITOR's order and times): "
        f"**{trips:.1f}**",
        "- by command: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(commands.items(), key=lambda kv: -kv[1]) if v >= 0.05),
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
