"""`maie metrics`: queue depth per queue while a slow endpoint keeps the enhance queue full, LLM
tokens and time per endpoint, degraded chunks and job latency, counted by the real pools."""

from __future__ import annotations

import re
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Worker, base_env
from fakes.process import ManagedProcess, free_port
from fakes.server_process import FakeServerProcess

from maie import submit
from maie.settings import load_settings

MAIE = shutil.which("maie", path=str(Path(sys.executable).parent)) or "maie"
LINES = [f"Speaker {i % 2}: point {i} of the budget is the river ferry timetable" for i in range(12)]


@pytest.fixture
def exporter(dual: dict[str, Worker], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    cmd = [MAIE, "metrics", "--port", str(port)]
    metrics = ManagedProcess("maie metrics", cmd, tmp_path / "metrics.out", env=base_env(), cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/metrics"
    metrics.start().wait_ready(lambda: _answers(url), 60)
    try:
        yield url
    finally:
        metrics.stop()
        assert metrics.proc.returncode == 0, metrics.log()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except OSError:
        return False


def scrape(url: str) -> dict[str, float]:
    """Samples by `name{labels}` (labels as printed)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match and not line.startswith("#"):
            samples[match.group(1)] = float(match.group(2))
    return samples


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_what_the_pools_did(
    exporter: str,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHUNK_MAX_TOKENS", "40")
    settings = load_settings(env_file=None)
    before = scrape(exporter)
    # A slow enhancement endpoint: the chunks wait in the enhance queue, and the gauge shows them.
    server_a.faults([{"kind": "delay", "seconds": 2, "times": 8}])
    slow = submit("\n".join(LINES), settings=settings)
    deadline = time.monotonic() + 60
    while scrape(exporter).get('maie_queue_depth{queue="enhance"}', 0) < 1:
        assert time.monotonic() < deadline, "the enhance queue never showed as waiting"
        time.sleep(0.1)
    assert slow.wait(timeout=180).status == "SUCCESS"
    # One chunk rewritten by the model: kept raw, counted as degraded.
    server_a.reset()  # no delay left over
    server_a.faults([{"kind": "rewrite", "match": "zebra"}])
    rewritten = submit("Clerk: the zebra crossing ledger is closed", settings=settings)
    results = [slow.result(), rewritten.wait(timeout=120)]
    assert all(r is not None and r.status == "SUCCESS" for r in results)

    after = scrape(exporter)
    assert after['maie_queue_depth{queue="enhance"}'] == 0
    assert 'maie_queue_depth{queue="summary"}' in after
    chunks = [c for r in results if r for c in r.chunks]
    degraded = sum(c.degraded for c in chunks)
    assert degraded == 1
    assert delta(after, before, 'maie_chunks_total{outcome="degraded"}') == degraded
    assert delta(after, before, 'maie_chunks_total{outcome="ok"}') == len(chunks) - degraded
    endpoints = (("enhance", server_a, "enhance-model"), ("summary", server_b, "summary-model"))
    for task, server, model in endpoints:
        labels = f'{{endpoint="{server.base_url}",model="{model}",task="{task}"}}'
        stage = [r.metrics[task] for r in results if r]
        tokens = delta(after, before, f"maie_llm_completion_tokens_total{labels}")
        assert tokens == sum(m.completion_tokens for m in stage) > 0
        prompt = delta(after, before, f"maie_llm_prompt_tokens_total{labels}")
        assert prompt == sum(m.prompt_tokens for m in stage)
        assert delta(after, before, f"maie_llm_seconds_total{labels}") > 0
    jobs = 'maie_job_duration_seconds_count{status="SUCCESS"}'
    assert delta(after, before, jobs) == 2
    assert delta(after, before, 'maie_job_duration_seconds_sum{status="SUCCESS"}') >= 2 * 2  # the delays
