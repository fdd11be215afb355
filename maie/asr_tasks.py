"""The recognition tasks (queue asr): thin wrappers around maie/audio.py and maie/asr.py.

    asr_split  the recording → 16 kHz samples → parts cut at silences → replaces itself with
               chord(group(asr_part[p]), asr_join)
    asr_part   one part → its timed segments, stored under (job, part)
    asr_join   the parts in order → the raw transcript → chunks → replaces itself with the job's
               text canvas (enhance chord → summary), exactly as if the transcript had been submitted

Failures are recorded against the job with stage "asr" (see `MaieTask`), so nothing else runs.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from maie.asr import TimedSegment, get_recognizer, plan_parts, recognise, stitch
from maie.audio import SAMPLE_RATE, decode_pcm16
from maie.audio_store import AudioStore
from maie.canvas import asr_parts_canvas, job_canvas
from maie.celery import app, job_ttl
from maie.errors import InputError, JobFailed
from maie.inputs import Segment, segments_to_text
from maie.job_meta import JobMeta
from maie.lanes import is_short
from maie.names import ASR_JOIN, ASR_PART, ASR_SPLIT
from maie.submit import split_into_chunks
from maie.task_base import MaieTask, check_cancelled, settings, store

__all__ = ["asr_split", "asr_part", "asr_join"]

log = logging.getLogger("maie.asr")


@lru_cache(maxsize=1)
def audio_store() -> AudioStore:
    return AudioStore(settings().celery_result_backend, job_ttl(settings()))


@app.task(bind=True, base=MaieTask, name=ASR_SPLIT, stage="asr", what="split")
def asr_split(self: MaieTask, *, job_id: str) -> dict[str, Any]:
    import numpy as np

    check_cancelled(job_id)
    self.started(job_id)
    started = time.time()
    data = audio_store().audio(job_id)
    if data is None:
        raise JobFailed(f"the recording of job {job_id} is not in the store (expired?)")
    samples = decode_pcm16(data)
    seconds = len(samples) / SAMPLE_RATE
    asr = settings().asr
    spans = plan_parts(samples, asr.segment_seconds) if asr.vad else [(0, len(samples))]
    if not spans:
        raise InputError(f"no speech found in {seconds:.1f} s of audio (Silero VAD)")
    audio_store().put_pcm(job_id, [np.ascontiguousarray(samples[a:b]).tobytes() for a, b in spans])
    store().set_meta(
        job_id, asr_parts=len(spans), asr_spans=spans, asr_started_at=started, audio_seconds=seconds
    )
    log.info("recording of %.1f s cut into %d parts", seconds, len(spans))
    raise self.replace(asr_parts_canvas(self.app, job_id, len(spans)))


@app.task(bind=True, base=MaieTask, name=ASR_PART, stage="asr", what="part {index}")
def asr_part(self: MaieTask, *, job_id: str, index: int) -> dict[str, Any]:
    import numpy as np

    check_cancelled(job_id)
    self.started(job_id)
    pcm = audio_store().pcm(job_id, index)
    if pcm is None:
        raise JobFailed(f"part {index} of job {job_id} is not in the store (expired?)")
    start, _ = store().meta(job_id).asr_spans[index]
    rec = get_recognizer(settings().asr)
    started_at = time.time()
    started = time.monotonic()
    segments, info = recognise(rec, np.frombuffer(pcm, dtype=np.int16), start / SAMPLE_RATE)
    record = {
        "segments": [seg.to_json() for seg in segments],
        "language": info.language,
        "language_probability": round(float(info.language_probability), 4),
        "audio_seconds": round(len(pcm) / 2 / SAMPLE_RATE, 3),
        "seconds": round(time.monotonic() - started, 4),
        "started_at": started_at,
        "finished_at": time.time(),
    }
    audio_store().put_part(job_id, index, record)
    store().set_meta(job_id, version_asr=rec.version())
    log.info("part %d recognised: %d segments in %.2f s", index, len(segments), record["seconds"])
    return {"index": index, "segments": len(segments)}


@app.task(bind=True, base=MaieTask, name=ASR_JOIN, stage="asr", what="join")
def asr_join(self: MaieTask, _header: Any = None, *, job_id: str) -> dict[str, Any]:
    check_cancelled(job_id)
    self.started(job_id)
    st = store()
    meta = st.meta(job_id)
    parts = audio_store().parts(job_id)
    timed = stitch(parts, meta.asr_parts)
    if not timed:
        raise InputError(f"no speech recognised in {meta.audio_seconds or 0.0:.1f} s of audio")
    segments = [Segment(t.text, None, t.start, t.end) for t in timed]
    chunks = split_into_chunks(segments, settings())
    st.put_raw_transcript(job_id, _raw_transcript(timed, parts, meta))
    st.put_chunks(job_id, [c.text for c in chunks], n_chunks=len(chunks), asr_done=True)
    audio_store().drop_audio(job_id)
    log.info("transcript stitched: %d segments, %d chunks", len(timed), len(chunks))
    short = is_short(len(chunks), settings())
    raise self.replace(job_canvas(self.app, job_id, len(chunks), meta.features, short))


def _raw_transcript(
    timed: list[TimedSegment], parts: dict[int, dict[str, Any]], meta: JobMeta
) -> dict[str, Any]:
    audio_seconds = meta.audio_seconds or 0.0
    wall = time.time() - (meta.asr_started_at or time.time())
    # The language of the most audio: parts of one recording rarely disagree, but a short part
    # of music or noise can be "detected" as anything.
    by_language: dict[str, float] = {}
    for part in parts.values():
        by_language[part["language"]] = by_language.get(part["language"], 0.0) + part["audio_seconds"]
    language = max(by_language, key=lambda k: by_language[k]) if by_language else None
    probabilities = [p["language_probability"] for p in parts.values() if p["language"] == language]
    return {
        "text": segments_to_text(Segment(t.text) for t in timed),
        "segments": [t.to_json() for t in timed],
        "metrics": {
            "audio_seconds": round(audio_seconds, 3),
            "wall_seconds": round(wall, 3),
            "real_time_factor": round(wall / audio_seconds, 4) if audio_seconds else 0.0,
            "compute_seconds": round(sum(p["seconds"] for p in parts.values()), 3),
            "parts": len(parts),
            "language": language,
            "language_probability": max(probabilities) if probabilities else None,
        },
        "version": meta.version_asr,
    }
