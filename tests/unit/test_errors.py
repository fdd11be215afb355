"""Third-party errors become MAIE's, at the edge; MAIE's errors survive Celery's JSON round trip."""

from __future__ import annotations

import httpx
import openai
import pytest

from maie.backends.openai_server import translate_openai_error
from maie.celery import app
from maie.errors import (
    BackendRejected,
    BackendUnavailable,
    ConfigError,
    InputError,
    JobFailed,
    MaieError,
    QueueFull,
)

URL = "http://llm:8001/v1"


def status_error(code: int) -> openai.APIStatusError:
    request = httpx.Request("POST", URL + "/chat/completions")
    response = httpx.Response(code, request=request, json={"error": {"message": f"boom {code}"}})
    client = openai.OpenAI(base_url=URL, api_key="k", max_retries=0)
    try:
        return client._make_status_error_from_response(response)
    finally:
        client.close()


@pytest.mark.parametrize(
    "code, kind",
    [
        (400, BackendRejected),
        (401, ConfigError),
        (403, ConfigError),
        (404, ConfigError),
        (408, BackendUnavailable),
        (422, BackendRejected),
        (429, BackendUnavailable),
        (500, BackendUnavailable),
        (503, BackendUnavailable),
    ],
)
def test_status_codes_map_to_retryable_or_not(code: int, kind: type[MaieError]) -> None:
    err = translate_openai_error(status_error(code), URL)
    assert type(err) is kind
    assert URL in str(err) and "\n" not in str(err)


def test_401_names_the_endpoint_and_the_setting() -> None:
    err = translate_openai_error(status_error(401), URL)
    assert URL in str(err) and "API_KEY" in str(err)


def test_connection_and_timeout_are_retryable() -> None:
    request = httpx.Request("POST", URL)
    assert isinstance(
        translate_openai_error(openai.APIConnectionError(request=request), URL), BackendUnavailable
    )
    assert isinstance(
        translate_openai_error(openai.APITimeoutError(request=request), URL), BackendUnavailable
    )


@pytest.mark.parametrize(
    "cls", [MaieError, ConfigError, InputError, BackendUnavailable, BackendRejected, QueueFull, JobFailed]
)
def test_errors_survive_celery_json_round_trip(cls: type[MaieError]) -> None:
    backend = app.backend
    stored = backend.encode(backend.prepare_exception(cls("chunk 3: endpoint said no")))
    rebuilt = backend.exception_to_python(backend.decode(stored))
    assert type(rebuilt) is cls
    assert str(rebuilt) == "chunk 3: endpoint said no"
