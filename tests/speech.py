"""Real speech made on the spot: espeak-ng speaks known sentences; PyAV re-encodes and mixes them.

Used by the audio tests and the ASR benchmark. espeak-ng is a Debian package; scripts/test.sh
installs it when missing (scripts/lib/espeak.sh), the way it starts Redis.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

# Short plain sentences without digits (a recogniser may write "three" as "3").
SENTENCES = [
    "The quarterly budget review is scheduled for Thursday morning.",
    "Please send your slides to Maria before noon.",
    "We agreed to move the product launch to the end of the month.",
    "The design team will share a new prototype next week.",
    "Customer feedback on the mobile application has been very positive.",
    "Our main risk is the delay in the supplier contract.",
    "John will prepare a summary of the open questions.",
    "The marketing budget needs another approval from finance.",
    "Everyone should review the hiring plan before the next meeting.",
    "The server migration finished without any major problems.",
    "We need more people to test the new search feature.",
    "The training session for new staff starts on Monday afternoon.",
]
RATE = 16_000


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (scripts/test.sh does)")
    return exe


def speak(text: str, *, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz mono float32 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [espeak(), "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True, capture_output=True
        )
        return decode(wav.read_bytes())


def decode(data: bytes, rate: int = RATE) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    out: list[np.ndarray] = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def encode(
    samples: np.ndarray,
    fmt: str = "wav",
    *,
    rate: int = RATE,
    channels: int = 1,
    in_rate: int = RATE,
) -> bytes:
    """Mono float samples at `in_rate` → a file of `fmt` (wav, mp3, flac, ogg, opus, m4a) at
    `rate` Hz with `channels` channels (the mono signal in every channel)."""
    import av

    container_fmt, codec = {
        "wav": ("wav", "pcm_s16le"),
        "mp3": ("mp3", "libmp3lame"),
        "flac": ("flac", "flac"),
        "ogg": ("ogg", "libopus"),
        "opus": ("ogg", "libopus"),
        "m4a": ("ipod", "aac"),
    }[fmt]
    if codec == "libopus":
        rate = 48_000  # Opus runs at 48 kHz
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout=layout, rate=rate)
        mono = np.clip(samples, -1, 1).astype(np.float32)
        block = 4096
        for start in range(0, len(mono), block):
            piece = np.repeat(mono[start : start + block], channels).reshape(1, -1)  # interleaved
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout=layout)
            frame.sample_rate = in_rate
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    out.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def recording(sentences: list[str], gaps: list[float], *, lead: float = 0.5) -> np.ndarray:
    """The sentences one after another, `gaps[i]` seconds of silence after sentence i."""
    pieces = [silence(lead)]
    for i, text in enumerate(sentences):
        pieces += [speak(text), silence(gaps[i % len(gaps)])]
    return np.concatenate(pieces)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref = words(reference)
    return Levenshtein.distance(ref, words(hypothesis)) / max(1, len(ref))
