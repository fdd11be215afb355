"""An LLM server restart in the middle of a run: it takes minutes (a vLLM server loads its model),
and no job may fail for it, nor may the pool hammer the dead endpoint meanwhile.

The enhancement endpoint goes away for 3 minutes while 30 jobs run, then comes back on the same
port. While it is away, a listener on its port counts every connection attempt and resets it (as a
server that is starting up does), so the requests the pool sends to a dead endpoint are counted.
This test takes a little over 3 minutes by design.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.outage import ResettingListener
from fakes.process import free_port
from fakes.server_process import FakeServerProcess
from helpers import assert_complete_once, n_chunks, transcript, wait_for
from rig import Rig, open_rig

from maie import submit

OUTAGE_SECONDS = 180
JOBS = 30
BACKOFF_MAX = 10  # also the longest cooldown between two probes


@pytest.fixture
def rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b) as r:
        yield r


def served(server: FakeServerProcess) -> int:
    return sum(1 for e in server.log() if str(e["path"]).endswith("/chat/completions") and e["status"] == 200)


def test_an_endpoint_down_for_3_minutes_fails_no_job_and_is_probed_not_hammered(rig: Rig) -> None:
    port = free_port()
    a = FakeServerProcess(port=port, name="A", model="enhance-model", api_key="sk-test-enhance-key").start()
    listener: ResettingListener | None = None
    try:
        env = rig.env(
            LLM_SERVER__ENHANCE_BASE_URL=a.base_url,
            TASK_RETRY_BACKOFF_MAX=str(BACKOFF_MAX),
            LLM_SERVER__REQUEST_TIMEOUT_SECONDS="10",
        )
        env.pop("TASK_MAX_RETRIES")  # the default: no count bound, only the 15-minute deadline
        rig.start(env, enhance=4, summary=2)
        a.faults([{"kind": "delay", "seconds": 0.3}])
        settings = rig.settings(chunk_max_tokens=40)
        sources = [transcript(10 + i % 3) for i in range(JOBS)]
        jobs = [submit(source, settings=settings) for source in sources]
        total = sum(n_chunks(job) for job in jobs)
        wait_for("the run to be under way", lambda: served(a) >= 10, 60)
        done_before = served(a)
        a.stop()  # requests in flight are cut
        listener = ResettingListener(port)
        time.sleep(OUTAGE_SECONDS)
        attempts = listener.count
        listener.close()
        listener = None
        a = FakeServerProcess(
            port=port, name="A2", model="enhance-model", api_key="sk-test-enhance-key"
        ).start()
        results = [job.wait(timeout=300) for job in jobs]
        failed = [r.job_id for r in results if r.status != "SUCCESS"]
        assert failed == [], [r.error for r in results if r.error]
        for result, source, job in zip(results, sources, jobs, strict=True):
            assert_complete_once(result, source, n_chunks(job))
        # While it was down, the pool probed it about once per cooldown (the cooldown doubles up
        # to TASK_RETRY_BACKOFF_MAX): the calls under way when it went, then a few probes at
        # first, then one per BACKOFF_MAX seconds. Without the shared cooldown each of the
        # waiting chunks would retry on its own backoff: hundreds of attempts.
        waiting = total - done_before
        print(
            f"{attempts} connection attempts in {OUTAGE_SECONDS} s down; {waiting} of {total} chunks waiting"
        )
        bound = 4 + 8 + OUTAGE_SECONDS // BACKOFF_MAX + 4
        assert 0 < attempts <= bound, f"{attempts} connection attempts while down ({waiting} chunks waiting)"
        assert waiting > 2 * bound  # the bound means something: far fewer attempts than waiting chunks
        assert "marked down" in (rig.log_dir / "enhance-0" / "app.log").read_text()
    finally:
        if listener is not None:
            listener.close()
        a.stop()
