"""Audio input: tell a recording from a transcript by its content, probe it with PyAV, decode it.

A file (or an upload's bytes) is taken as audio when it starts like an audio container (WAV, MP3,
FLAC, OGG/Opus, M4A/MP4, WebM, AIFF, AMR, CAF) or when it is not text and PyAV finds an audio stream
in it; the name's extension plays no part. Text goes to the transcript parsers (maie/inputs/).

`probe_audio` decodes the whole recording once, without keeping it, before anything is queued:
that is the only way to know its real duration and to refuse a corrupt, truncated or silent file
with a one-line `InputError` instead of a failed job. PyAV is in the `asr` extra and imported lazily,
so a base install still reads transcripts (`maie[audio]` is enough to submit recordings).
"""

from __future__ import annotations

import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from maie.errors import InputError

__all__ = ["AUDIO_EXTENSIONS", "AudioInfo", "AudioInput", "read_audio", "probe_audio", "decode_pcm16"]

# Only used to say "file not found" for a one-line string that names no file; detection is by content.
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".mp4", ".aac", ".flac", ".ogg", ".oga", ".opus", ".webm")
_HEAD = 4096
_MAX_PATH_CHARS = 4096
# Peak below -60 dBFS across the whole file: nothing a recogniser could hear.
_SILENT_PEAK = 10 ** (-60 / 20)
SAMPLE_RATE = 16_000  # what Whisper models take


@dataclass(frozen=True)
class AudioInfo:
    """What probing found: container, codec, decodable duration and source format."""

    container: str
    codec: str
    seconds: float
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class AudioInput:
    data: bytes
    name: str
    info: AudioInfo


def _fail(message: str) -> InputError:
    return InputError(" ".join(message.split()))


def _show(value: str, limit: int = 80) -> str:
    flat = " ".join(value.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _has_audio_magic(head: bytes) -> bool:
    return (
        (head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"RF64"))
        or head[:4] in (b"RF64", b"fLaC", b"OggS", b"caff", b".snd", b"\x1aE\xdf\xa3")
        or head[:3] == b"ID3"
        or head[4:8] == b"ftyp"
        or head[:4] == b"FORM"
        or head[:5] == b"#!AMR"
        # An MPEG audio frame (MP3 without an ID3 tag) or ADTS AAC: 11 sync bits.
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    )


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the end of the sample
    return True


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        return None
    return av


def read_audio(
    source: str | os.PathLike[str] | bytes,
    *,
    filename: str | None = None,
    max_bytes: int,
    max_seconds: float,
) -> AudioInput | None:
    """The recording `source` holds (a path, a one-line path string, or bytes), probed and checked;
    None when `source` is not audio (text, or bytes PyAV finds no audio in), left to the transcript
    parsers. Raises `InputError` for audio that is too big, too long, corrupt or silent."""
    if isinstance(source, bytes):
        name = filename or "upload"
        where = f"upload {_show(name)}"
        data = source
        if len(data) > max_bytes:
            raise _fail(f"{where} is {len(data)} bytes, over the audio limit of {max_bytes} (ASR__MAX_BYTES)")
    else:
        path = _as_file(source)
        if path is None:
            return None
        name = path.name
        where = f"file {_show(str(path))}"
        with path.open("rb") as handle:
            head = handle.read(_HEAD)
        if not (_has_audio_magic(head) or not _is_text(head)):
            return None
        size = path.stat().st_size
        if size > max_bytes:
            raise _fail(f"{where} is {size} bytes, over the audio limit of {max_bytes} (ASR__MAX_BYTES)")
        data = path.read_bytes()
    magic = _has_audio_magic(data[:_HEAD])
    if not data or not (magic or not _is_text(data[:_HEAD])):
        return None
    av = _import_av()
    if av is None:
        if not magic:
            return None
        raise _fail(f"{where} is audio; reading recordings needs PyAV: pip install 'maie[audio]'")
    info = probe_audio(data, where=where, max_seconds=max_seconds, strict=magic)
    return None if info is None else AudioInput(data, name, info)


def _as_file(source: str | os.PathLike[str]) -> Path | None:
    """The regular file `source` names, or None when it is transcript text (or names nothing)."""
    if isinstance(source, str):
        if not source.strip() or any(c in source for c in "\n\r\0") or len(source) >= _MAX_PATH_CHARS:
            return None
    path = Path(os.fspath(source))
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            raise _fail(f"file not found: {_show(str(path))}") from None
        return None  # the transcript reader words its own errors for missing files
    return path if stat.S_ISREG(mode) and path.stat().st_size > 0 else None


def probe_audio(data: bytes, *, where: str, max_seconds: float, strict: bool = True) -> AudioInfo | None:
    """Decode `data` once (nothing kept) and return what it holds.

    `strict`: the content looks like audio, so every problem is an error; otherwise a file with no
    audio stream returns None (it is left to the transcript parsers)."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        if not strict:
            return None
        raise _fail(f"{where} looks like audio but cannot be decoded: {_reason(exc)}") from None
    with container:
        if not container.streams.audio:
            if not strict:
                return None
            raise _fail(f"{where} holds no audio stream (container {container.format.name})")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        declared = container.duration / 1_000_000 if container.duration else None
        if declared is not None and declared > max_seconds * 1.05:  # a header can round up
            raise _too_long(where, declared, max_seconds)
        samples, rate, loud = 0, ctx.sample_rate or 0, False
        try:
            for frame in container.decode(stream):
                rate = frame.sample_rate or rate
                samples += frame.samples
                if not loud:
                    loud = _peak(frame.to_ndarray()) >= _SILENT_PEAK
                if rate and samples / rate > max_seconds:
                    raise _too_long(where, samples / rate, max_seconds)
        except av.FFmpegError as exc:
            at = f" after {samples / rate:.1f} s" if rate and samples else ""
            raise _fail(f"{where}: the audio data is corrupt or truncated{at}: {_reason(exc)}") from None
        info = AudioInfo(
            container=str(container.format.name),
            codec=str(ctx.name),
            seconds=round(samples / rate, 3) if rate else 0.0,
            sample_rate=int(rate),
            channels=int(ctx.layout.nb_channels if ctx.layout else getattr(ctx, "channels", 0) or 0),
        )
    if info.seconds <= 0:
        raise _fail(f"{where} holds no audio samples ({info.container}, {info.codec})")
    riff = _riff_shortfall(data)
    if riff:
        # FFmpeg's WAV reader trusts the file's length over the header, so check the header here.
        raise _fail(
            f"{where} looks truncated: its RIFF header declares {riff + len(data)} bytes, "
            f"the file has {len(data)}"
        )
    if declared is not None and info.seconds < declared - max(1.0, 0.02 * declared):
        raise _fail(
            f"{where} looks truncated: its header declares {declared:.1f} s of audio but only "
            f"{info.seconds:.1f} s decode"
        )
    if not loud:
        raise _fail(f"{where} is silent: {info.seconds:.1f} s of audio, all below -60 dBFS")
    return info


def _riff_shortfall(data: bytes) -> int:
    """Bytes a WAV file's RIFF header declares beyond the end of the file (0 when complete)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    size = int.from_bytes(data[4:8], "little")
    # Streaming writers leave 0 or 0xFFFFFFFF when the length was unknown: nothing to compare.
    if size in (0, 0xFFFFFFFF):
        return 0
    return max(0, size + 8 - len(data))


def _too_long(where: str, seconds: float, max_seconds: float) -> InputError:
    return _fail(
        f"{where} is over {seconds:.0f} s long, over the limit of {max_seconds:.0f} s (ASR__MAX_SECONDS)"
    )


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]


def _peak(samples: np.ndarray) -> float:
    import numpy as np

    if samples.size == 0:
        return 0.0
    peak = float(np.max(np.abs(samples.astype(np.float64, copy=False))))
    if np.issubdtype(samples.dtype, np.integer):
        if samples.dtype == np.uint8:  # unsigned 8-bit PCM is centred on 128
            return float(np.max(np.abs(samples.astype(np.float64) - 128.0))) / 128.0
        peak /= float(np.iinfo(samples.dtype).max)
    return 0.0 if math.isnan(peak) else peak


def decode_pcm16(data: bytes) -> np.ndarray:
    """The recording as 16 kHz mono signed 16-bit samples (what Whisper models take), via PyAV.

    Channels are mixed down and the rate converted by FFmpeg's resampler; frames FFmpeg cannot
    decode are skipped, as probing already refused files that fail outright."""
    import av
    import numpy as np

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    parts: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):  # flush what the resampler holds back
            parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts).astype(np.int16, copy=False) if parts else np.zeros(0, np.int16)
