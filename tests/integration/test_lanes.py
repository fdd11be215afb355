"""A short job submitted behind a long one is not served after every chunk of the long one.

Both ways side by side, on real worker processes: with the short lanes (the default) the short job
finishes while the long job is still being enhanced; with SHORT_JOB_MAX_CHUNKS=0 (one queue, first
in, first out) it finishes only after the long job's last chunk, which shows the test can tell.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.server_process import FakeServerProcess
from helpers import n_chunks, transcript
from rig import Rig, open_rig

from maie import submit

pytestmark = pytest.mark.broker


@pytest.fixture
def rig(tmp_path: Path, server_a: FakeServerProcess, server_b: FakeServerProcess) -> Iterator[Rig]:
    with open_rig(tmp_path, server_a, server_b) as r:
        yield r


@pytest.mark.parametrize("short_job_max_chunks", [4, 0], ids=["lanes", "fifo"])
def test_a_short_job_behind_a_long_one(rig: Rig, short_job_max_chunks: int) -> None:
    env = rig.env(SHORT_JOB_MAX_CHUNKS=str(short_job_max_chunks))
    rig.start(env, enhance=2, summary=2)
    rig.a.faults([{"kind": "delay", "seconds": 0.25}])  # each enhancement takes a while
    settings = rig.settings(chunk_max_tokens=40, short_job_max_chunks=short_job_max_chunks)
    long_job = submit(transcript(40), settings=settings)
    total = n_chunks(long_job)
    assert total >= 20
    short_job = submit("Ann: so we meet again on monday", settings=settings)
    assert n_chunks(short_job) == 1

    result = short_job.wait(timeout=120)
    long_done_then = long_job.status().chunks_done
    assert result.status == "SUCCESS", result.error
    assert long_job.wait(timeout=300).status == "SUCCESS"
    if short_job_max_chunks:
        # Served beside the long job: most of its chunks were still to come.
        assert long_done_then < total // 2, (long_done_then, total)
    else:
        # First in, first out: every chunk of the long job went first.
        assert long_done_then == total, (long_done_then, total)
