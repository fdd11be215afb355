"""The HTTP API end to end: `maie api` (uvicorn, two server processes) in front of real pools.

Two rigs, each with a redis-server of its own:
- `busy`: enhance and summary pools bound to the fake LLM servers A and B; jobs run to their end.
- `idle`: no pool at all, so whatever a request queued stays visible: bad input, 413, 429 and
  idempotency are checked against queues nobody else touches.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from brokers import redis_depth
from conftest import clean_redis
from fakes.server_process import FakeServerProcess
from helpers import BAD_INPUTS, KEY, ApiServer, Bad, chat_requests, in_flight, transcript, wait_for
from rig import Rig, open_rig

from maie import Job, submit
from maie.errors import InputError
from maie.inputs import TranscriptText


@pytest.fixture(scope="module")
def busy(
    tmp_path_factory: pytest.TempPathFactory, server_a: FakeServerProcess, server_b: FakeServerProcess
) -> Iterator[tuple[Rig, ApiServer]]:
    base = tmp_path_factory.mktemp("api-busy")
    with open_rig(base, server_a, server_b) as rig:
        # Hung requests (the status test) outlast any slow machine: 30 s per attempt, not 10.
        env = rig.env(
            SECRET_API_KEY=KEY,
            CHUNK_MAX_TOKENS="40",
            QUEUE_MAX_DEPTH="60",
            LLM_SERVER__REQUEST_TIMEOUT_SECONDS="30",
        )
        rig.start(env, enhance=4, summary=4)
        api = ApiServer(env, base / "api", "--workers", "2").wait_ready()
        try:
            yield rig, api
        finally:
            api.stop()


@pytest.fixture(scope="module")
def idle(
    tmp_path_factory: pytest.TempPathFactory, server_a: FakeServerProcess, server_b: FakeServerProcess
) -> Iterator[tuple[Rig, ApiServer]]:
    base = tmp_path_factory.mktemp("api-idle")
    with open_rig(base, server_a, server_b) as rig:
        env = rig.env(
            SECRET_API_KEY=KEY,
            CHUNK_MAX_TOKENS="40",
            QUEUE_MAX_DEPTH="3",
            MAX_INPUT_BYTES="1000",
            API_MAX_UPLOAD_BYTES="100000",
        )
        api = ApiServer(env, base / "api").wait_ready()
        try:
            yield rig, api
        finally:
            api.stop()


@pytest.fixture
def quiet(idle: tuple[Rig, ApiServer]) -> tuple[Rig, ApiServer]:
    """The idle rig, emptied: no job, no queued task."""
    clean_redis(idle[0].client)
    return idle


def snapshot(rig: Rig) -> tuple[int, int, int]:
    """Tasks queued per queue and job records: what a refused request must leave unchanged."""
    c = rig.client
    return redis_depth(c, "enhance"), redis_depth(c, "summary"), sum(1 for _ in c.scan_iter("maie:*"))


# -- auth ------------------------------------------------------------------------------------------


def test_key_missing_401_wrong_403_and_the_open_routes(quiet: tuple[Rig, ApiServer]) -> None:
    rig, api = quiet
    body = {"text": "Ann: hello there", "features": ["summary"]}
    calls = [
        ("POST", "/v1/process_text", {"json": body}),
        ("POST", "/v1/process", {"files": {"file": ("t.txt", b"Ann: hi\n")}}),
        ("GET", f"/v1/status/{uuid.uuid4()}", {}),
        ("DELETE", f"/v1/status/{uuid.uuid4()}", {}),
        ("GET", "/v1/models", {}),
    ]
    with httpx.Client(base_url=api.base_url, timeout=30) as anonymous:
        for method, path, kwargs in calls:
            r = anonymous.request(method, path, **kwargs)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["detail"] == "X-API-Key header required"
            r = anonymous.request(method, path, headers={"X-API-Key": KEY + "x"}, **kwargs)
            assert r.status_code == 403, (path, r.text)
            assert r.json() == {
                "detail": "invalid API key",
                "error": {"code": "forbidden", "message": "invalid API key"},
            }
        # Probes, documentation and templates need no key, as before.
        for path in (
            "/health",
            "/openapi.json",
            "/docs",
            "/v1/templates",
            "/v1/templates/meeting_notes/schema",
        ):
            assert anonymous.get(path).status_code in (200, 503), path
    assert snapshot(rig) == (0, 0, 0)


def test_the_api_refuses_to_start_without_a_key_unless_insecure_on_loopback(
    idle: tuple[Rig, ApiServer], tmp_path: Path
) -> None:
    rig, _ = idle
    env = {k: v for k, v in rig.env().items() if k != "SECRET_API_KEY"}
    maie = Path(sys.executable).parent / "maie"
    refused = subprocess.run([maie, "api"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert (
        refused.stderr.startswith("maie: error: SECRET_API_KEY is not set")
        and refused.stderr.count("\n") == 1
    )
    anywhere = subprocess.run(
        [maie, "api", "--insecure", "--host", "0.0.0.0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert anywhere.returncode == 2
    assert "127.0.0.1 only: not on 0.0.0.0" in anywhere.stderr
    # --insecure on 127.0.0.1: served without a key.
    open_api = ApiServer(env, tmp_path / "insecure", "--insecure").wait_ready()
    try:
        with httpx.Client(base_url=open_api.base_url, timeout=30) as anonymous:
            r = anonymous.get("/v1/models")
            assert r.status_code == 200, r.text
    finally:
        open_api.stop()


# -- routes and statuses ---------------------------------------------------------------------------


def test_process_text_round_trip_with_every_output_and_a_previous_template_id(
    busy: tuple[Rig, ApiServer],
) -> None:
    rig, api = busy
    source = transcript(12)
    r = api.client.post(
        "/v1/process_text",
        json={
            "text": source,
            "features": ["raw_transcript", "clean_transcript", "summary", "enhancement_metrics"],
            "template_id": "meeting_notes_v1",
        },
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "PENDING"
    task_id = str(uuid.UUID(accepted["task_id"]))  # the canonical, dashed spelling
    assert accepted["task_id"] == task_id and r.headers["Location"] == f"/v1/status/{task_id}"
    done = api.wait_status(task_id, ("COMPLETE", "FAILED"))
    assert done["status"] == "COMPLETE", done
    assert done["state"] == "SUCCESS" and done["error"] is None and done["error_code"] is None
    # MAIE's job id is the same UUID: the Python API and the CLI see the same job.
    result = Job(task_id, rig.settings()).wait(timeout=5)
    results = done["results"]
    assert results["clean_transcript"] == result.enhanced_text
    assert results["summary"] == result.summary and done["template_id"] == "meeting_notes"
    assert results["raw_transcript"] == source.strip()
    metrics = results["enhancement_metrics"]
    assert metrics["chunks_total"] == len(result.chunks) >= 3 and metrics["chunks_degraded"] == []
    assert metrics["edit_rate_cleaning"] is not None
    assert done["chunks_total"] == done["chunks_done"] == len(result.chunks)
    assert done["versions"]["llm"]["name"] == "summary-model"
    assert done["versions"]["enhance"]["model"] == "enhance-model"
    assert done["metrics"]["stages"]["enhance"]["chunks"] == len(result.chunks)
    submitted, completed = (done[k] for k in ("submitted_at", "completed_at"))
    assert submitted is not None and completed is not None and submitted <= completed
    assert done["metrics"]["processing_time_seconds"] >= 0
    # The API logs to the shared app.log like the pools, tagged with the job and pool=api.
    app_log = (api.workdir / "logs" / "app.log").read_text()
    assert f"[job={uuid.UUID(task_id).hex}] [pool=api]" in app_log and KEY not in app_log


def test_upload_default_features_give_clean_transcript_and_summary_only(busy: tuple[Rig, ApiServer]) -> None:
    _, api = busy
    srt = (
        b"1\n00:00:01,000 --> 00:00:03,000\nAnn: we ship on friday\n\n"
        b"2\n00:00:04,000 --> 00:00:05,000\nBob: ok\n"
    )
    r = api.client.post("/v1/process", files={"file": ("meeting.srt", srt, "application/x-subrip")})
    assert r.status_code == 202, r.text
    done = api.wait_status(r.json()["task_id"], ("COMPLETE", "FAILED"))
    assert done["status"] == "COMPLETE", done
    assert done["results"]["clean_transcript"] == "Ann: We ship on friday.\nBob: Ok."
    assert done["results"]["summary"] is not None
    assert done["results"]["raw_transcript"] is None and done["results"]["enhancement_metrics"] is None
    assert done["template_id"] == "generic_summary"  # MAIE's default when none is named


def test_pending_processing_cancelled_and_failed_statuses(busy: tuple[Rig, ApiServer]) -> None:
    rig, api = busy
    rig.a.reset()
    rig.b.reset()
    # Every chunk with "zebra" hangs on server A: a one-chunk job never gets a chunk done (PENDING);
    # a long job with "yak" in its last line gets every other chunk done (PROCESSING_LLM).
    rig.a.faults([{"kind": "hang", "match": "zebra"}, {"kind": "hang", "match": "yak"}])
    try:
        pending = api.client.post(
            "/v1/process_text",
            json={"text": transcript(2, {0: "zebra"}), "features": "clean_transcript,summary"},
        ).json()["task_id"]
        running = api.client.post(
            "/v1/process_text", json={"text": transcript(16, {15: "yak"}), "features": ["clean_transcript"]}
        ).json()["task_id"]
        wait_for("both hanging chunks on server A", lambda: len(in_flight(rig.a)) == 2, 60)
        body = api.wait_status(running, ("PROCESSING_LLM",), timeout=60)
        assert body["state"] == "RUNNING" and body["stage"] == "enhance"
        assert 0 < body["chunks_done"] < body["chunks_total"] and body["results"] is None
        body = api.client.get(f"/v1/status/{pending}").json()
        assert body["status"] == "PENDING" and body["chunks_done"] == 0 and body["stage"] == "enhance"
        assert body["submitted_at"] is not None and body["completed_at"] is None
        for task_id in (pending, running):
            r = api.client.delete(f"/v1/status/{task_id}")
            assert r.status_code == 200, r.text
            cancelled = r.json()
            assert (cancelled["status"], cancelled["state"]) == ("FAILED", "CANCELLED")
            assert (cancelled["error_code"], cancelled["stage"]) == ("job_cancelled", "job")
            assert cancelled["completed_at"] is not None
            assert api.client.get(f"/v1/status/{task_id}").json()["state"] == "CANCELLED"
    finally:
        rig.a.reset()  # wakes the hung requests
    # A summary the LLM refuses (HTTP 400 cannot succeed on retry): FAILED at stage summary.
    rig.b.faults([{"kind": "status", "status": 400, "match": "walrus"}])
    try:
        failed = api.client.post(
            "/v1/process_text", json={"text": transcript(2, {1: "walrus"}), "features": ["summary"]}
        ).json()["task_id"]
        body = api.wait_status(failed, ("COMPLETE", "FAILED"))
    finally:
        rig.b.reset()
    assert (body["status"], body["stage"], body["error_code"]) == ("FAILED", "summary", "backend_rejected")
    assert "400" in body["error"] and "\n" not in body["error"] and body["results"] is None
    # Cancelling a job that ended changes nothing; an unknown job is 404, a malformed id 422.
    assert api.client.delete(f"/v1/status/{failed}").json()["state"] == "FAILURE"
    unknown = api.client.get(f"/v1/status/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no job ")
    assert api.client.delete(f"/v1/status/{uuid.uuid4()}").status_code == 404
    assert api.client.get("/v1/status/not-a-uuid").status_code == 422
    assert chat_requests(rig.b, "yak") == [] and chat_requests(rig.b, "zebra") == []


def test_templates_models_health_and_docs(busy: tuple[Rig, ApiServer]) -> None:
    _, api = busy
    templates = api.client.get("/v1/templates").json()["templates"]
    by_id = {t["id"]: t for t in templates}
    assert {"meeting_notes", "meeting_notes_vi", "interview", "generic_summary"} <= set(by_id)
    meeting = by_id["meeting_notes"]
    assert meeting["schema_url"] == "/v1/templates/meeting_notes/schema" and meeting["example"]
    assert "meeting_notes_v1" in meeting["aliases"] and meeting["language"] == "en"
    schema = api.client.get("/v1/templates/meeting_notes/schema").json()
    assert schema["type"] == "object" and schema["properties"] == meeting["parameters"]
    # A previous MAIE template id (its v2 bundles were Vietnamese) resolves to MAIE's bundle.
    assert api.client.get("/v1/templates/meeting_notes_v2/schema").json() == (
        api.client.get("/v1/templates/meeting_notes_vi/schema").json()
    )
    detail = api.client.get("/v1/templates/interview").json()
    assert "{{" in detail["prompt_template"] and detail["schema_data"]["type"] == "object"
    for bad in ("no_such_template", "..%2F..%2Fetc"):
        r = api.client.get(f"/v1/templates/{bad}/schema")
        assert r.status_code == 404 and "\n" not in r.json()["detail"], r.text

    models = api.client.get("/v1/models")
    assert models.status_code == 200
    by_task = {m["id"]: m for m in models.json()["models"]}
    assert by_task["enhance"]["name"] == "enhance-model" and by_task["summary"]["name"] == "summary-model"
    assert by_task["summary"]["endpoint"].startswith("http://127.0.0.1:")
    assert by_task["enhance"]["api_key"] == "set (masked)"
    assert "sk-test" not in models.text

    health = api.client.get("/health")
    assert health.status_code == 200, health.text
    report = health.json()
    assert report["status"] == "healthy" and report["redis_connected"] and report["worker_active"]
    assert set(report["queues"]) == {"enhance", "summary", "asr"}
    # No asr pool in this rig, and none needed while no recording waits.
    assert report["pools"]["enhance"] and report["pools"]["summary"] and report["pools"]["asr"] == []

    assert "swagger" in api.client.get("/docs").text.lower()
    spec = api.client.get("/openapi.json").json()
    assert {"/v1/process", "/v1/process_text", "/v1/status/{task_id}", "/v1/models", "/health"} <= set(
        spec["paths"]
    )
    assert "delete" in spec["paths"]["/v1/status/{task_id}"]
    assert "examples" in spec["components"]["schemas"]["ProcessTextRequest"]
    assert "example" in spec["components"]["schemas"]["ProcessResponse"]


# -- limits ----------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_with_or_without_a_length_and_queues_nothing(
    quiet: tuple[Rig, ApiServer],
) -> None:
    rig, api = quiet
    big = b"Ann: " + b"word " * 30_000  # 150 kB > API_MAX_UPLOAD_BYTES=100000
    r = api.client.post("/v1/process", files={"file": ("big.txt", big)})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large" and "100000" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"text": "'
        for _ in range(40):
            yield b"x" * 4096
        yield b'"}'

    r = api.client.post("/v1/process_text", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert snapshot(rig) == (0, 0, 0)


def test_full_queue_is_429_with_retry_after_and_queues_nothing(quiet: tuple[Rig, ApiServer]) -> None:
    rig, api = quiet
    first = api.client.post(
        "/v1/process_text", json={"text": transcript(9), "features": ["clean_transcript"]}
    )
    assert first.status_code == 202
    before = snapshot(rig)
    assert before[0] >= 3  # QUEUE_MAX_DEPTH=3 and nobody consumes
    r = api.client.post(
        "/v1/process", files={"file": ("t.txt", transcript(2).encode())}, headers={"Idempotency-Key": "later"}
    )
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "5"
    assert r.json()["detail"].startswith("queue enhance holds") and "QUEUE_MAX_DEPTH=3" in r.json()["detail"]
    assert snapshot(rig) == before and not rig.client.exists("maie:idem:later")


def test_idempotency_key_returns_the_same_job_and_queues_nothing_more(quiet: tuple[Rig, ApiServer]) -> None:
    rig, api = quiet
    headers = {"Idempotency-Key": "meeting-2024-05-02"}
    one = api.client.post("/v1/process_text", json={"text": transcript(2)}, headers=headers)
    assert one.status_code == 202
    before = snapshot(rig)
    again = api.client.post("/v1/process", files={"file": ("t.txt", transcript(4).encode())}, headers=headers)
    assert again.status_code == 202 and again.json()["task_id"] == one.json()["task_id"]
    assert snapshot(rig) == before
    other = api.client.post(
        "/v1/process_text", json={"text": transcript(2)}, headers={"Idempotency-Key": "b"}
    )
    assert other.json()["task_id"] != one.json()["task_id"]
    bad = api.client.post(
        "/v1/process_text", json={"text": transcript(2)}, headers={"Idempotency-Key": "a b"}
    )
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["detail"]


# -- bad input: the CLI's matrix -------------------------------------------------------------------

# Kinds that name the server's file system, which an HTTP client cannot reach.
FILE_SYSTEM_ONLY = {"directory", "missing-file"}


def as_request(bad: Bad) -> dict[str, Any]:
    """The same bad submission through HTTP: an upload (or a JSON body for stdin)."""
    form: dict[str, Any] = {}
    args = dict(zip(bad.args[::2], bad.args[1::2], strict=True))
    if "--template" in args:
        form["template_id"] = args["--template"]
    if "--features" in args:
        # "," means "no feature" to the CLI; over HTTP an empty list means the default, so the
        # request that asks for no LLM feature is the raw transcript alone.
        form["features"] = args["--features"] if args["--features"] != "," else "raw_transcript"
    if bad.stdin is not None:
        return {"method": "/v1/process_text", "json": {"text": bad.stdin.decode(), **form}}
    assert bad.content is not None
    return {"method": "/v1/process", "files": {"file": (bad.name, bad.content)}, "data": form}


def cli_message(bad: Bad, rig: Rig) -> str:
    """What `maie submit` says for the same input, run where the file is (named as the client did)."""
    settings = rig.settings(chunk_max_tokens=40, max_input_bytes=1000)
    args = dict(zip(bad.args[::2], bad.args[1::2], strict=True))
    features = args.get("--features", "enhance,summary").split(",")
    source: str | Path
    if bad.stdin is not None:
        source = TranscriptText(bad.stdin.decode())
    else:
        assert bad.content is not None
        Path(bad.name).write_bytes(bad.content)
        source = Path(bad.name)
    try:
        submit(source, template_id=args.get("--template"), features=features, settings=settings)
    except InputError as exc:
        return " ".join(str(exc).split())
    raise AssertionError(f"{bad.id}: accepted by submit")


HTTP_BAD = [b for b in BAD_INPUTS if b.id not in FILE_SYSTEM_ONLY]


@pytest.mark.parametrize("bad", HTTP_BAD, ids=[b.id for b in HTTP_BAD])
def test_bad_input_is_400_with_the_cli_message_and_queues_nothing(
    bad: Bad, quiet: tuple[Rig, ApiServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, api = quiet
    monkeypatch.chdir(tmp_path)
    request = as_request(bad)
    path = request.pop("method")
    r = api.client.post(path, **request)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["code"] == "input_error"
    assert body["detail"] == cli_message(bad, rig), body
    assert bad.expect.lower() in body["detail"].lower()
    assert snapshot(rig) == (0, 0, 0)


def test_malformed_requests_are_422_in_one_line(quiet: tuple[Rig, ApiServer]) -> None:
    rig, api = quiet
    for kwargs in (
        {"url": "/v1/process_text", "json": {"features": ["summary"]}},
        {"url": "/v1/process_text", "json": {"text": 3}},
        {"url": "/v1/process_text", "content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"url": "/v1/process", "data": {"features": "summary"}, "files": {"other": ("t.txt", b"Ann: hi")}},
    ):
        r = api.client.post(**kwargs)
        assert r.status_code == 422, (kwargs, r.text)
        assert isinstance(r.json()["detail"], str) and "\n" not in r.json()["detail"]
    assert snapshot(rig) == (0, 0, 0)


# -- the previous MAIE's README, as written ----------------------------------------------------------

README_EXAMPLES = [
    """curl -X POST "http://localhost:8000/v1/process" \\
  -H "X-API-Key: <your-api-key>" \\
  -F "file=@/path/to/your/audio.wav" \\
  -F "features=clean_transcript" \\
  -F "features=summary" \\
  -F "template_id=meeting_notes_v1\"""",
    """curl -X POST "http://localhost:8000/v1/process" \\
  -H "X-API-Key: your-api-key" \\
  -F "file=@meeting.wav" \\
  -F "features=clean_transcript" \\
  -F "features=summary" \\
  -F "template_id=meeting_notes_v1\"""",
    """curl -X POST "http://localhost:8000/v1/process" \\
  -H "X-API-Key: your-api-key" \\
  -F "file=@long-presentation.m4a" \\
  -F "features=raw_transcript" \\
  -F "features=clean_transcript" \\
  -F "features=summary" \\
  -F "features=enhancement_metrics" \\
  -F "template_id=interview_transcript_v1" \\
  -F "asr_backend=chunkformer\"""",
    """curl -X POST "http://localhost:8000/v1/process" \\
  -H "X-API-Key: your-api-key" \\
  -F "file=@meeting_recording.wav" \\
  -F "features=clean_transcript" \\
  -F "features=summary" \\
  -F "template_id=meeting_notes_v1" \\
  -F "enable_diarization=true\"""",
]
README_BATCH = """for file in *.wav; do
  curl -X POST "http://localhost:8000/v1/process" \\
    -H "X-API-Key: your-api-key" \\
    -F "file=@$file" \\
    -F "features=clean_transcript"
done"""
README_STATUS = """curl -H "X-API-Key: your-api-key" \\
  http://localhost:8000/v1/status/550e8400-e29b-41d4-a716-446655440000"""
README_HEALTH = "curl -f http://localhost:8000/health"


def test_the_previous_readme_curl_examples_work_as_written(
    busy: tuple[Rig, ApiServer], tmp_path: Path
) -> None:
    """The commands are run by bash as the README prints them; only the server's address, the key
    and the `/path/to/your/` placeholder are filled in. The files hold transcripts under the
    README's audio names (MAIE reads a transcript by its content, whatever its extension)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (apt-get install curl) — the README examples run real curl")
    _, api = busy
    for name in ("audio.wav", "meeting.wav", "long-presentation.m4a", "meeting_recording.wav"):
        (tmp_path / name).write_text(transcript(4))

    def run(command: str) -> str:
        filled = (
            command.replace("http://localhost:8000", api.base_url)
            .replace("<your-api-key>", KEY)
            .replace("your-api-key", KEY)
            .replace("/path/to/your/", "")
        )
        proc = subprocess.run(
            ["bash", "-c", filled], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (command, proc.stderr)
        return proc.stdout

    task_ids = []
    for command in README_EXAMPLES:
        reply = json.loads(run(command))
        assert reply["status"] == "PENDING" and uuid.UUID(reply["task_id"])
        task_ids.append(reply["task_id"])
    batch = [
        json.loads(line) for line in run(README_BATCH).replace("}{", "}\n{").splitlines() if line.strip()
    ]
    assert len(batch) == 3 and all(b["status"] == "PENDING" for b in batch)  # the three .wav files
    for task_id in task_ids + [b["task_id"] for b in batch]:
        api.wait_status(task_id, ("COMPLETE",))
    # The status example, with a real id in place of the README's.
    status = json.loads(run(README_STATUS.replace("550e8400-e29b-41d4-a716-446655440000", task_ids[2])))
    assert status["status"] == "COMPLETE"
    results = status["results"]
    assert results["raw_transcript"] and results["clean_transcript"] and results["summary"]
    assert results["enhancement_metrics"]["chunks_total"] >= 1
    assert status["template_id"] == "interview"
    assert json.loads(run(README_HEALTH))["status"] == "healthy"


# -- load ------------------------------------------------------------------------------------------


def test_200_concurrent_submissions_from_20_clients_none_lost(busy: tuple[Rig, ApiServer]) -> None:
    rig, api = busy
    rig.a.reset()
    rig.b.reset()

    def client(n: int) -> list[tuple[int, str | None]]:
        out: list[tuple[int, str | None]] = []
        with httpx.Client(base_url=api.base_url, headers={"X-API-Key": KEY}, timeout=120) as c:
            for i in range(10):
                text = transcript(3, {1: f"client{n}job{i}"})
                r = c.post(
                    "/v1/process_text", json={"text": text, "features": ["clean_transcript", "summary"]}
                )
                out.append((r.status_code, r.json().get("task_id") if r.status_code == 202 else None))
        return out

    jobs_before = job_ids(rig)
    started = time.monotonic()
    with ThreadPoolExecutor(20) as ex:
        replies = [reply for replies in ex.map(client, range(20)) for reply in replies]
    assert len(replies) == 200
    assert {code for code, _ in replies} <= {202, 429}, sorted({code for code, _ in replies})
    accepted = [task_id for code, task_id in replies if code == 202]
    assert accepted and len(set(accepted)) == len(accepted)
    for task_id in accepted:
        assert task_id is not None
        body = api.wait_status(task_id, ("COMPLETE", "FAILED"), timeout=300)
        assert body["status"] == "COMPLETE", body
    # Every accepted job ran once (one summary call each); a refused one left no job behind.
    assert len(chat_requests(rig.b)) == len(accepted)
    assert job_ids(rig) - jobs_before == {uuid.UUID(t).hex for t in accepted}
    print(
        f"200 submissions: {len(accepted)} accepted, {200 - len(accepted)} refused (429), "
        f"all done in {time.monotonic() - started:.1f} s"
    )


def job_ids(rig: Rig) -> set[str]:
    return {k.split(":")[2] for k in rig.client.scan_iter("maie:job:*") if k.count(":") == 2}
