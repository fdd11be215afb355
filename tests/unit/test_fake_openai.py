"""The fake OpenAI-compatible server, driven through the official `openai` client."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from fakes.accelerator import SimulatedAccelerator
from fakes.schema_fill import instance_for_schema
from fakes.server import FakeOpenAIServer
from fakes.server_process import FakeServerProcess
from openai import OpenAI

KEY = "sk-unit-secret-4242"
MODEL = "fake-model"

TRANSCRIPT = (
    "Alice: so we start the meeting now\n"
    "\n"
    "Bob Smith: did everyone read the report?\n"
    "okay then let us vote on the budget"
)

# Nested, in the shape pydantic emits: $defs/$ref, enums and nullable unions.
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "items", "sentiment", "owner"],
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "sentiment": {"enum": ["positive", "neutral", "negative"]},
        "owner": {"type": ["string", "null"]},
        "count": {"type": "integer", "minimum": 3},
        "items": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/Item"}},
    },
    "$defs": {
        "Item": {
            "type": "object",
            "additionalProperties": False,
            "required": ["text", "priority", "due", "done"],
            "properties": {
                "text": {"type": "string", "minLength": 1},
                "priority": {"type": "string", "enum": ["high", "low"]},
                "due": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                "done": {"type": "boolean"},
            },
        }
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with FakeOpenAIServer(name="unit", model=MODEL, api_key=KEY) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: Any) -> None:
    server.reset()


@pytest.fixture
def client(server: Any) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=10) as c:
        yield c


def _chat(client: OpenAI, text: str = TRANSCRIPT, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Clean up the transcript."},
            {"role": "user", "content": text},
        ],
        **kwargs,
    )


def _summary(client: OpenAI, **kwargs: Any) -> Any:
    fmt = {"type": "json_schema", "json_schema": {"name": "summary", "schema": SUMMARY_SCHEMA}}
    return _chat(client, response_format=fmt, **kwargs)


def _words(text: str) -> list[str]:
    return [w for w in re.sub(r"[^\w\s]", "", text.lower()).split() if w]


def test_enhancement_keeps_words_labels_and_lines(client: OpenAI) -> None:
    reply = _chat(client, temperature=0.0)
    out = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert out == (
        "Alice: So we start the meeting now.\n"
        "\n"
        "Bob Smith: Did everyone read the report?\n"
        "Okay then let us vote on the budget."
    )
    assert _words(out) == _words(TRANSCRIPT)
    assert reply.model == MODEL
    assert reply.usage is not None
    assert reply.usage.completion_tokens == len(out.split())
    prompt_words = len("Clean up the transcript.".split()) + len(TRANSCRIPT.split())
    assert reply.usage.prompt_tokens == prompt_words
    assert reply.usage.total_tokens == prompt_words + len(out.split())


def test_json_schema_reply_validates_nested_schema(client: OpenAI) -> None:
    reply = _summary(client)
    data = json.loads(reply.choices[0].message.content)
    jsonschema.validate(data, SUMMARY_SCHEMA)
    assert data["sentiment"] == "positive"
    assert data["owner"] is not None and data["count"] == 3
    assert len(data["items"]) == 2 and data["items"][0]["priority"] == "high"
    # Strings are built from the last line of the input, so the input was read.
    assert "okay then let us vote on" in data["items"][0]["text"]
    assert data["items"][0]["due"].startswith("due okay")
    assert len(data["title"]) <= 30


def test_instance_for_pydantic_style_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "uniqueItems": True,
                "minItems": 3,
            },
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "kind": {"const": "meeting"},
            "meta": {"allOf": [{"$ref": "#/$defs/Meta"}]},
        },
        "$defs": {"Meta": {"properties": {"at": {"type": "string", "format": "date-time"}}}},
    }
    value = instance_for_schema(schema, "first line\nhello world")
    jsonschema.validate(value, schema)
    assert value["kind"] == "meeting" and value["tags"][0] == "tags hello world"


def test_json_object_reply(client: OpenAI) -> None:
    reply = _chat(client, response_format={"type": "json_object"})
    assert json.loads(reply.choices[0].message.content) == {}


def test_wrong_api_key_is_401(server: Any) -> None:
    with OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            _chat(bad)
    assert info.value.status_code == 401
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    assert server.log()[-1]["status"] == 401


def test_unknown_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "hi"}]
        )


def test_429_once_then_success(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "status", "status": 429, "times": 1}])
    with pytest.raises(openai.RateLimitError) as info:
        _chat(client)
    assert info.value.response.headers["retry-after"] == "0"
    assert set(info.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    assert _chat(client).choices[0].finish_reason == "stop"
    assert [e["status"] for e in server.log()] == [429, 200]
    assert [e["fault"] for e in server.log()] == ["status", None]


def test_500(server: Any, client: OpenAI) -> None:
    server.faults({"kind": "status", "status": 500, "times": 2})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _chat(client)
    _chat(client)


def test_delay_answers_late(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "delay", "seconds": 0.3, "times": 1}])
    started = time.monotonic()
    reply = _chat(client)
    assert time.monotonic() - started >= 0.3
    assert reply.choices[0].message.content.startswith("Alice: So")


def test_hang_until_client_gives_up(server: Any) -> None:
    server.faults([{"kind": "hang", "times": 1}])
    with OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=0.3) as impatient:
        with pytest.raises(openai.APITimeoutError):
            _chat(impatient)
    # The handler notices the client left and stops waiting.
    deadline = time.monotonic() + 5
    while server.log()[-1]["fault"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    entry = server.log()[-1]
    assert entry["fault"] == "hang" and entry["status"] is None


def test_malformed_json_only_hits_json_requests(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "malformed_json", "times": 1}])
    _chat(client)  # a plain enhancement request does not use the rule up
    reply = _summary(client)
    assert reply.choices[0].finish_reason == "stop"
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.content)
    json.loads(_summary(client).choices[0].message.content)


def test_invalid_schema(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "invalid_schema", "times": 1}])
    data = json.loads(_summary(client).choices[0].message.content)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SUMMARY_SCHEMA)


def test_length_fault_and_max_tokens(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "length", "times": 1}])
    cut = _chat(client)
    assert cut.choices[0].finish_reason == "length"
    assert len(cut.choices[0].message.content.split()) == len(TRANSCRIPT.split()) // 2

    short = _chat(client, max_tokens=4)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == "Alice: So we start"
    assert short.usage is not None and short.usage.completion_tokens == 4

    truncated = _summary(client, max_tokens=5).choices[0]
    assert truncated.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.message.content)


def test_rewrite_changes_most_words(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "rewrite", "times": 1}])
    out = _chat(client).choices[0].message.content
    assert out.splitlines()[0].startswith("Alice: ")
    kept = set(_words(out)) & set(_words(TRANSCRIPT))
    assert len(kept) < len(set(_words(TRANSCRIPT))) / 2


def test_a_regex_holds_the_reply_to_it(server: Any, client: OpenAI) -> None:
    pattern = r"[Aa]lice: [Ss]o[.,]? (.|\n)*"
    server.faults([{"kind": "rewrite"}])
    # The rewrite would break the pattern: a constrained decoder could not write it.
    out = _chat(client, extra_body={"structured_outputs": {"regex": pattern}}).choices[0].message.content
    assert re.fullmatch(pattern, out) and _words(out) == _words(TRANSCRIPT)
    free = _chat(client).choices[0].message.content
    assert _words(free) != _words(TRANSCRIPT)
    entries = [e for e in server.log() if e["path"] == "/v1/chat/completions"]
    assert [e["regex"] for e in entries] == [pattern, None]
    # A pattern the reply cannot match is sent anyway and said in the log.
    _chat(client, extra_body={"structured_outputs": {"regex": "nothing like it"}})
    assert server.log()[-1]["schema_error"] == "the reply does not match the requested regex"


def test_a_bad_regex_or_two_constraints_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="invalid regex"):
        _chat(client, extra_body={"structured_outputs": {"regex": "(unclosed"}})
    with pytest.raises(openai.BadRequestError, match="one kind of structured outputs"):
        _summary(client, extra_body={"structured_outputs": {"regex": "a"}})


def test_the_simulated_accelerator_paces_every_token_in_batches() -> None:
    texts = [" ".join(f"w{i}" for i in range(n)) for n in (3, 5, 8, 13)]
    with FakeOpenAIServer(
        model=MODEL, accelerator=SimulatedAccelerator(2.0, 0.1, max_batch=2)
    ).start() as srv:
        with OpenAI(base_url=srv.base_url, api_key="EMPTY", max_retries=0, timeout=30) as c:
            with ThreadPoolExecutor(4) as pool:
                replies = list(pool.map(lambda t: _chat(c, t), texts))
        metrics = dict(
            line.split(" ") for line in srv.metrics_text().splitlines() if line.startswith("fake:acc")
        )
        acc = srv.accelerator
        assert acc is not None
    tokens = [r.usage.completion_tokens for r in replies]
    assert tokens == [3, 5, 8, 13]  # each reply as without pacing
    # Every token is one request's share of one step, whatever the interleaving; a step runs at
    # most two requests, so there are at least half as many steps as tokens.
    assert int(metrics["fake:accelerator_tokens_total"]) == acc.tokens == sum(tokens)
    assert acc.batch_total == acc.tokens
    assert sum(tokens) / 2 <= acc.steps <= sum(tokens)


def test_drop_is_a_connection_error(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "drop", "times": 1}])
    with pytest.raises(openai.APIConnectionError) as info:
        _chat(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    _chat(client)


def test_match_filter(server: Any, client: OpenAI) -> None:
    server.faults([{"kind": "status", "status": 503, "match": "BETA"}])
    _chat(client, text="alpha transcript")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as info:
            _chat(client, text="the BETA transcript")
        assert info.value.status_code == 503
    assert server.fault_rules()[0]["hits"] == 2


def test_probability_is_reproducible(server: Any, client: OpenAI) -> None:
    def run() -> list[int]:
        server.reset()
        server.faults([{"kind": "status", "status": 500, "probability": 0.5, "seed": 7}])
        statuses = []
        for _ in range(20):
            try:
                _chat(client, text="x")
                statuses.append(200)
            except openai.InternalServerError:
                statuses.append(500)
        return statuses

    first = run()
    assert first == run()
    assert 0 < first.count(500) < 20


def test_request_log_contents_and_no_key(server: Any, client: OpenAI) -> None:
    _chat(client, max_tokens=50, temperature=0.2)
    _summary(client)
    log = server.log()
    assert [e["path"] for e in log] == ["/v1/chat/completions"] * 2
    first, second = log
    assert first["model"] == MODEL and first["auth"] is True and first["server"] == "unit"
    assert first["max_tokens"] == 50 and first["temperature"] == 0.2
    assert first["has_response_format"] is False and second["has_response_format"] is True
    assert first["messages"][1] == {"role": "user", "content": TRANSCRIPT}
    assert first["status"] == 200 and first["fault"] is None
    assert second["response_format_type"] == "json_schema" and second["schema_error"] is None
    with urllib.request.urlopen(server.url + "/_log") as response:
        raw = response.read().decode()
    assert json.loads(raw) == log
    assert KEY not in raw


def test_models(client: OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].owned_by == "fake"


def test_completions_health_check(client: OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="ping", max_tokens=1)
    assert reply.choices[0].text == "ok"


def test_metrics_and_bad_rules(server: Any, client: OpenAI) -> None:
    _chat(client)
    with urllib.request.urlopen(server.url + "/metrics") as response:
        text = response.read().decode()
    assert 'fake:requests_total{path="/v1/chat/completions"} 1' in text
    with pytest.raises(ValueError, match="fault kind"):
        server.faults([{"kind": "explode"}])
    request = urllib.request.Request(server.url + "/_faults", data=b'[{"kind": "delay", "x": 1}]')
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    with info.value:
        assert info.value.code == 400


def test_many_concurrent_requests(client: OpenAI) -> None:
    def one(i: int) -> str:
        return _chat(client, text=f"speaker {i}: line {i}").choices[0].message.content

    with ThreadPoolExecutor(max_workers=32) as pool:
        outs = list(pool.map(one, range(128)))
    assert outs == [f"speaker {i}: Line {i}." for i in range(128)]


def test_subprocess_server_and_request_log_file(tmp_path: Path) -> None:
    log_file = tmp_path / "requests.jsonl"
    with FakeServerProcess(name="B", api_key=KEY, request_log=log_file) as proc:
        assert proc.base_url == f"http://127.0.0.1:{proc.port}/v1"
        proc.faults([{"kind": "status", "status": 500, "times": 1}])
        with OpenAI(base_url=proc.base_url, api_key=KEY, max_retries=0, timeout=10) as c:
            with pytest.raises(openai.InternalServerError):
                _chat(c)
            assert _chat(c).choices[0].finish_reason == "stop"
        assert [(e["status"], e["server"]) for e in proc.log()] == [(500, "B"), (200, "B")]
        proc.reset()
        assert proc.log() == []
    lines = log_file.read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == [500, 200]
    assert KEY not in log_file.read_text()
