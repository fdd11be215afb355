"""A job end to end: real Redis, real `celery -A maie worker` processes, fake OpenAI servers A and B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import redis
from brokers import redis_depth
from conftest import Worker, dual_env, load_jsonl
from fakes.server_process import FakeServerProcess

from maie import Job, submit
from maie.enhance import normalize_words
from maie.job_meta import JobMeta
from maie.settings import load_settings
from maie.templates import load_template

TRANSCRIPT = (
    "Project Manager: okay so today we decide the remote control design\n"
    "Marketing: i think the buttons should be big and the colour yellow\n"
    "Industrial Designer: the battery goes in the back we need a kinetic one\n"
)


def content_words(text: str) -> list[str]:
    """The spoken words, without speaker labels (a turn split across chunks repeats its label)."""
    import re

    return normalize_words("\n".join(re.sub(r"^[^:\n]{1,40}:\s", "", line) for line in text.splitlines()))


def chat_requests(server: FakeServerProcess) -> list[dict[str, object]]:
    return [e for e in server.log() if str(e["path"]).endswith("/chat/completions")]


@pytest.mark.broker
def test_one_chunk_job_uses_enhance_server_a_and_summary_server_b(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    job = submit(TRANSCRIPT, settings=load_settings(env_file=None))
    result = job.wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    assert result.enhanced_text is not None
    assert result.enhanced_text.splitlines()[0] == (
        "Project Manager: Okay so today we decide the remote control design."
    )
    assert normalize_words(result.enhanced_text) == normalize_words(TRANSCRIPT)
    template = load_template("generic_summary")
    assert result.summary is not None
    jsonschema.validate(result.summary, template.schema)
    assert [c.index for c in result.chunks] == [0]
    # Dual endpoints: enhancement only reached A, the summary only B, each with its own model.
    a, b = chat_requests(server_a), chat_requests(server_b)
    assert len(a) == 1 and not a[0]["has_response_format"] and a[0]["model"] == "enhance-model"
    assert len(b) == 1 and b[0]["has_response_format"] and b[0]["model"] == "summary-model"
    assert result.versions["enhance"].base_url == server_a.base_url
    assert result.versions["summary"].base_url == server_b.base_url
    assert result.versions["summary"].model == "summary-model"
    assert result.metrics["enhance"].chunks == 1
    assert result.metrics["summary"].completion_tokens > 0


@pytest.mark.broker
def test_many_chunks_keep_their_order(dual: dict[str, Worker], server_a: FakeServerProcess) -> None:
    item = load_jsonl("summary_dev.jsonl")[0]
    transcript = str(item["transcript"])
    settings = load_settings(env_file=None, chunk_max_tokens=48)
    job = submit(transcript, settings=settings)
    result = job.wait(timeout=120)
    assert result.status == "SUCCESS", result.error
    assert len(result.chunks) >= 20
    assert [c.index for c in result.chunks] == list(range(len(result.chunks)))
    assert result.enhanced_text is not None
    # Every word of the transcript, once, in order: nothing lost, nothing doubled.
    assert content_words(result.enhanced_text) == content_words(transcript)
    assert len(chat_requests(server_a)) == len(result.chunks)
    status = job.status()
    assert status.state == "SUCCESS" and status.chunks_done == status.chunks_total


def test_429_and_500_are_retried_then_succeed(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    server_a.faults(
        [{"kind": "status", "status": 429, "times": 1}, {"kind": "status", "status": 500, "times": 1}]
    )
    server_b.faults([{"kind": "status", "status": 503, "times": 1}])
    result = submit(TRANSCRIPT, settings=load_settings(env_file=None)).wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    statuses = [e["status"] for e in chat_requests(server_a)]
    assert statuses == [429, 500, 200]
    assert [e["status"] for e in chat_requests(server_b)] == [503, 200]


def test_400_fails_the_job_naming_stage_chunk_and_code(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    server_a.faults([{"kind": "status", "status": 400, "times": 1}])
    result = submit(TRANSCRIPT, settings=load_settings(env_file=None)).wait(timeout=60)
    assert result.status == "FAILURE"
    assert result.error is not None
    assert (result.error.stage, result.error.code, result.error.chunk) == ("enhance", "backend_rejected", 0)
    assert "HTTP 400" in result.error.message and "chunk 0" in result.error.message
    assert len(chat_requests(server_a)) == 1  # not retried: a retry cannot help
    assert chat_requests(server_b) == []  # the summary never ran


def test_invalid_summary_json_is_repaired_once(dual: dict[str, Worker], server_b: FakeServerProcess) -> None:
    server_b.faults([{"kind": "malformed_json", "times": 1}])
    result = submit(TRANSCRIPT, settings=load_settings(env_file=None)).wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    requests = chat_requests(server_b)
    assert len(requests) == 2
    repair_prompt = json.dumps(requests[1]["messages"])
    assert "does not match the JSON Schema" in repair_prompt


def test_summary_still_invalid_after_repair_fails_with_the_errors(
    dual: dict[str, Worker], server_b: FakeServerProcess
) -> None:
    server_b.faults([{"kind": "invalid_schema", "times": 2}])
    result = submit(TRANSCRIPT, settings=load_settings(env_file=None)).wait(timeout=60)
    assert result.status == "FAILURE" and result.error is not None
    assert result.error.stage == "summary" and result.error.code == "backend_rejected"
    assert "after one repair" in result.error.message


def test_enhance_only_job(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    result = submit(TRANSCRIPT, features={"enhance"}, settings=load_settings(env_file=None)).wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    assert result.enhanced_text and result.summary is None
    assert chat_requests(server_b) == []


def test_summary_only_job(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    result = submit(
        TRANSCRIPT, features=["summary"], template_id="generic_summary", settings=load_settings(env_file=None)
    ).wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    assert result.summary is not None and result.enhanced_text is None
    assert chat_requests(server_a) == []
    # The summary read the raw transcript.
    assert "kinetic" in json.dumps(chat_requests(server_b)[0]["messages"])


def test_cli_submits_a_shared_transcript_to_two_servers(
    dual: dict[str, Worker],
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
    tmp_path: Path,
) -> None:
    item = load_jsonl("summary_dev.jsonl")[-1]
    path = tmp_path / "meeting.txt"
    path.write_text(str(item["transcript"]))
    env = {**dual_env(server_a, server_b), "CHUNK_MAX_TOKENS": "400"}
    maie = Path(sys.executable).parent / "maie"
    proc = subprocess.run(
        [str(maie), "submit", str(path), "--wait", "--format", "json", "--template", "meeting_notes"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "SUCCESS"
    assert content_words(result["enhanced_text"]) == content_words(str(item["transcript"]))
    jsonschema.validate(result["summary"], load_template("meeting_notes").schema)
    assert chat_requests(server_a) and chat_requests(server_b)
    # The keys reached the servers but never the result or the CLI's output.
    for secret in ("sk-test-enhance-key", "sk-test-summary-key"):
        assert secret not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "source, extra, message",
    [
        ("", {}, "empty"),
        ("   \n\t ", {}, "blank"),
        ("hello", {"template_id": "no_such_template"}, "unknown template"),
        ("hello", {"template_id": "../etc/passwd"}, "invalid template id"),
        ("hello", {"features": ["enhance", "translate"]}, "unknown feature"),
        ('{"segments": 3}', {}, "segments"),
        ("1\n00:00:05,000 --> 00:00:01,000\nhello\n", {"fmt": "srt"}, "ends before it starts"),
    ],
)
def test_bad_input_is_refused_before_anything_is_queued(
    dual: dict[str, Worker],
    fresh_redis: redis.Redis,
    source: str,
    extra: dict[str, object],
    message: str,
) -> None:
    from maie.errors import InputError

    with pytest.raises(InputError, match=message) as info:
        submit(source, settings=load_settings(env_file=None), **extra)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert redis_depth(fresh_redis, "enhance", "summary") == 0
    assert list(fresh_redis.scan_iter("maie:job:*")) == []


def test_cli_bad_input_exits_2_with_one_line(
    dual: dict[str, Worker],
    fresh_redis: redis.Redis,
    tmp_path: Path,
    server_a: FakeServerProcess,
    server_b: FakeServerProcess,
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    env = dual_env(server_a, server_b)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "maie"), "submit", str(empty)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("maie: error:")
    assert redis_depth(fresh_redis, "enhance") == 0


def test_unknown_job_id() -> None:
    from maie.errors import InputError

    with pytest.raises(InputError, match="no job"):
        Job("does-not-exist", load_settings(env_file=None)).result()


def test_worker_refuses_a_task_for_a_queue_it_does_not_serve(
    dual: dict[str, Worker],
) -> None:
    """An enhance task sent to the summary pool fails with the guide's message, naming what to do."""
    from maie.celery import app
    from maie.store import JobStore

    settings = load_settings(env_file=None)
    store = JobStore(settings.celery_result_backend, 600)
    store.create("misrouted", JobMeta(features=["enhance"], template_id=None, n_chunks=1), ["hi"])
    # ignore_result=False: with the task registered in this process (another test imported
    # maie.tasks), its own ignore_result would make get() return None at once instead of waiting.
    res = app.signature("maie.enhance_chunk", kwargs={"job_id": "misrouted", "index": 0}).apply_async(
        queue="summary", ignore_result=False
    )
    with pytest.raises(Exception, match="Client not available for task: enhance"):
        res.get(timeout=30)


def test_summary_cut_off_by_max_tokens_is_retried_with_a_larger_budget(
    dual: dict[str, Worker], server_b: FakeServerProcess
) -> None:
    server_b.faults([{"kind": "length", "times": 1}])
    result = submit(TRANSCRIPT, settings=load_settings(env_file=None)).wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    calls = chat_requests(server_b)
    assert [c["max_tokens"] for c in calls][:1] and len(calls) == 2
    assert int(calls[1]["max_tokens"]) > int(calls[0]["max_tokens"])  # type: ignore[call-overload]
    jsonschema.validate(result.summary, load_template("generic_summary").schema)


VIETNAMESE = (
    "Chị Lan: chúng ta cần hoàn thành báo cáo trước thứ sáu\n"
    "Anh Minh: tôi sẽ gọi cho nhà cung cấp vào sáng thứ hai\n"
    "Chị Lan: ngân sách cho quý này là hai trăm triệu đồng\n"
)


def test_vietnamese_round_trips_through_chunks_prompts_and_results(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess
) -> None:
    settings = load_settings(env_file=None, chunk_max_tokens=24)
    result = submit(VIETNAMESE, template_id="generic_summary_vi", settings=settings).wait(timeout=60)
    assert result.status == "SUCCESS", result.error
    assert result.enhanced_text is not None and len(result.chunks) >= 2
    # Every Vietnamese word, with its diacritics, reached the enhancement server and came back.
    assert content_words(result.enhanced_text) == content_words(VIETNAMESE)
    sent = "\n".join(str(c["messages"][-1]["content"]) for c in chat_requests(server_a))  # type: ignore[index]
    for line in VIETNAMESE.splitlines():
        assert line.split(": ", 1)[1] in sent
    jsonschema.validate(result.summary, load_template("generic_summary_vi").schema)
    # The summary prompt carried the enhanced Vietnamese text unchanged, line by line.
    prompt = str(chat_requests(server_b)[0]["messages"][-1]["content"])  # type: ignore[index]
    for line in result.enhanced_text.splitlines():
        assert line in prompt
