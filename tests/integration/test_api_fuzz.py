"""Property-based fuzzing of every route from the API's own OpenAPI document (schemathesis).

Against `maie api` with no pool behind it, so the queues show exactly what each request queued:
no answer is a 5xx or carries a traceback, every answer matches the documented status codes and
schemas, and a refused request (4xx) queues nothing and creates no job. Examples per route are
few, to keep CI short; the generation is seeded, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from brokers import redis_depth
from conftest import clean_redis
from fakes.server_process import FakeServerProcess
from helpers import KEY, ApiServer
from hypothesis import HealthCheck, given, settings
from rig import Rig, open_rig
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory, server_a: FakeServerProcess, server_b: FakeServerProcess
) -> Iterator[tuple[Rig, ApiServer]]:
    base = tmp_path_factory.mktemp("api-fuzz")
    with open_rig(base, server_a, server_b) as rig:
        env = rig.env(
            SECRET_API_KEY=KEY, QUEUE_MAX_DEPTH="50", MAX_INPUT_BYTES="20000", API_MAX_UPLOAD_BYTES="50000"
        )
        api = ApiServer(env, base / "api").wait_ready()
        try:
            yield rig, api
        finally:
            api.stop()


def footprint(rig: Rig) -> tuple[int, int, int]:
    c = rig.client
    return redis_depth(c, "enhance"), redis_depth(c, "summary"), sum(1 for _ in c.scan_iter("maie:job:*"))


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_route_no_5xx_no_traceback_and_a_refused_request_queues_nothing(
    fuzz_target: tuple[Rig, ApiServer],
) -> None:
    rig, api = fuzz_target
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/process", "POST /v1/process_text", "DELETE /v1/status/{task_id}"} <= labels
    statuses: dict[str, list[int]] = {}
    for operation in operations:
        try:
            statuses[operation.label] = fuzz(operation, rig, api)
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
    # Every route was reached, most with several examples; the refusals were really exercised.
    assert all(statuses.values()), statuses
    seen = {code for codes in statuses.values() for code in codes}
    assert {202, 400, 422} <= seen, statuses


def fuzz(operation: Any, rig: Rig, api: ApiServer) -> list[int]:
    """Valid and invalid requests for one operation, generated from its schema; their statuses."""
    codes: list[int] = []
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if footprint(rig)[0] > 40:  # accepted examples pile up (nobody consumes them)
            clean_redis(rig.client)
        before = footprint(rig)
        response = case.call(base_url=api.base_url, headers={"X-API-Key": KEY}, timeout=60)
        codes.append(response.status_code)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text and 'File "' not in response.text
        if response.status_code >= 400:
            assert footprint(rig) == before, (response.status_code, response.text)
            if "application/json" in str(response.headers.get("content-type")):
                detail = response.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail

    run()
    return codes
