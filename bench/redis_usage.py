"""What the benchmark's Redis DB holds: keys and memory, grouped by what the keys are for.

The instance's `used_memory` (INFO memory) counts every DB of a shared Redis, so another test run
moves it; the sum of `MEMORY USAGE` over this DB's keys counts only the benchmark's own data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from maie.names import JOB_PREFIX, QUEUES

SCAN_BATCH = 500


def group(key: str) -> str:
    """What a key is for, by its name: the job store by record, Celery's and kombu's keys by kind."""
    if key.startswith(JOB_PREFIX):
        parts = key[len(JOB_PREFIX) :].split(":")
        return f"job store: {JOB_PREFIX}<id>" + (f":{parts[1]}" if len(parts) > 1 else "")
    if key.startswith("maie:"):
        return f"maie:{key.split(':')[1]}*"
    if key.startswith("celery-task-meta-"):
        return "Celery task results (celery-task-meta-*)"
    if key.endswith((".j", ".t")) or key.startswith(("celery-taskset-meta-", "chord-unlock")):
        return "Celery chord counters"
    if key in QUEUES:
        return "broker: queue lists"
    if key.startswith(("unacked", "_kombu")):
        return "broker: unacked and bindings"
    return "other"


def per_job(name: str) -> bool:
    """Groups that grow with the number of jobs (the rest is pool and broker state of fixed size)."""
    return name.startswith(("job store", "Celery", "maie:idem"))


@dataclass
class Usage:
    """Keys and MEMORY USAGE bytes of one DB, by group, and the instance's used_memory."""

    keys: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    persistent: Counter[str] = field(default_factory=Counter)  # keys without a TTL
    longest_ttl: Counter[str] = field(default_factory=Counter)  # seconds the last key has left
    used_memory: int = 0  # the whole instance (every DB)

    @property
    def total_keys(self) -> int:
        return sum(self.keys.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def job_keys(self) -> int:
        return sum(n for g, n in self.keys.items() if per_job(g))


def measure(client: Any, skip: frozenset[str] = frozenset()) -> Usage:
    """SCAN the client's DB and ask MEMORY USAGE of every key (SAMPLES 0: every element counted)."""
    usage = Usage()
    batch: list[str] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
            pipe.ttl(key)
        replies = pipe.execute()
        for key, size, ttl in zip(batch, replies[::2], replies[1::2], strict=True):
            if size is None:  # expired between SCAN and MEMORY USAGE
                continue
            name = group(key)
            usage.keys[name] += 1
            usage.bytes[name] += int(size)
            if ttl == -1:
                usage.persistent[name] += 1
            usage.longest_ttl[name] = max(usage.longest_ttl[name], int(ttl))
        batch.clear()

    for raw in client.scan_iter(count=SCAN_BATCH):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key not in skip:
            batch.append(key)
        if len(batch) >= SCAN_BATCH:
            flush()
    flush()
    usage.used_memory = int(client.info("memory")["used_memory"])
    return usage


def table(columns: dict[str, Usage]) -> list[str]:
    """A Markdown table of keys and KiB per group, one pair of columns per measurement."""
    groups = sorted({g for u in columns.values() for g in u.keys}, key=lambda g: g)
    head = " | ".join(f"{name}: keys | {name}: KiB" for name in columns)
    lines = [f"| group | {head} |", "|---|" + "---:|---:|" * len(columns)]
    for g in groups:
        cells = " | ".join(f"{u.keys[g]:,} | {u.bytes[g] / 1024:,.1f}" for u in columns.values())
        lines.append(f"| {g} | {cells} |")
    totals = " | ".join(f"**{u.total_keys:,}** | **{u.total_bytes / 1024:,.1f}**" for u in columns.values())
    lines.append(f"| **this DB** | {totals} |")
    used = " | ".join(f"– | {u.used_memory / 1024:,.1f}" for u in columns.values())
    lines.append(f"| instance used_memory (all DBs) | {used} |")
    return lines
