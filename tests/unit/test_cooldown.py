"""The shared endpoint cooldown against a real Redis, and the local engine's call deadline."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
import redis
from conftest import REDIS_URL

from maie.backends.base import Completion
from maie.cooldown import Cooldown, EndpointCoolingDown, GuardedBackend
from maie.errors import BackendUnavailable, ConfigError


@pytest.fixture
def cooldown() -> Iterator[Cooldown]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    cd = Cooldown(client, f"http://127.0.0.1:1/v1/{uuid.uuid4().hex}", cap_seconds=4, probe_ttl=1)
    yield cd
    client.delete(cd.key, cd.probe_key)
    client.close()


def down(message: str = "cannot connect") -> BackendUnavailable:
    return BackendUnavailable(message)


def test_an_endpoint_is_up_until_a_call_fails(cooldown: Cooldown) -> None:
    assert cooldown.state() is None
    assert cooldown.enter() is False  # an ordinary call, not a probe


def test_a_failure_starts_a_cooldown_shared_by_every_task(cooldown: Cooldown) -> None:
    cooldown.failed(down(), probe=False)
    state = cooldown.state()
    assert state is not None and state.failures == 1 and state.error == "cannot connect"
    assert 0.5 < state.until - time.time() <= 1.0  # the first cooldown: 1 s
    # Another task (another worker: the state is in Redis) makes no call meanwhile.
    other = Cooldown(cooldown.redis, cooldown.url, cap_seconds=4, probe_ttl=1)
    with pytest.raises(EndpointCoolingDown) as info:
        other.enter()
    assert 0 < info.value.retry_after <= 1.0
    assert f"{cooldown.url} down for" in str(info.value) and "next probe in" in str(info.value)
    # Calls that were under way when it went down add their error, not a longer cooldown.
    cooldown.failed(down("reset"), probe=False)
    again = cooldown.state()
    assert again is not None and (again.failures, again.until, again.error) == (1, state.until, "reset")


def test_one_probe_at_a_time_failed_probes_double_the_cooldown_up_to_the_cap(cooldown: Cooldown) -> None:
    cooldown.failed(down(), probe=False)
    for failures, expected in ((2, 2.0), (3, 4.0), (4, 4.0)):
        cooldown.redis.hset(cooldown.key, "until", time.time() - 0.01)  # the cooldown is over
        assert cooldown.enter() is True  # this task probes
        with pytest.raises(EndpointCoolingDown, match="another task is probing it"):
            cooldown.enter()
        cooldown.failed(down(), probe=True)
        state = cooldown.state()
        assert state is not None and state.failures == failures
        assert expected - 0.5 < state.until - time.time() <= expected
        assert not cooldown.redis.exists(cooldown.probe_key)  # released


def test_a_success_clears_the_cooldown_for_everyone(cooldown: Cooldown) -> None:
    cooldown.failed(down(), probe=False)
    cooldown.redis.hset(cooldown.key, "until", time.time() - 0.01)
    assert cooldown.enter() is True
    cooldown.succeeded(probe=True)
    assert cooldown.state() is None and not cooldown.redis.exists(cooldown.probe_key)
    assert cooldown.enter() is False


class _Backend:
    kind = "vllm_server"
    task = "enhance"
    endpoint = "http://127.0.0.1:1/v1"
    model = "m"
    max_model_len = None
    discovered = True

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls = 0

    def chat(self, messages: object, **kwargs: object) -> Completion:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Completion(text="ok", finish_reason="stop")

    def count_tokens(self, text: str) -> int | None:
        return None

    def close(self) -> None:
        pass


def test_guarded_backend_makes_no_call_while_cooling_down_and_reports_progress(cooldown: Cooldown) -> None:
    touched: list[float] = []
    failing = _Backend(down())
    guarded = GuardedBackend(failing, cooldown, lambda: touched.append(time.time()))
    with pytest.raises(BackendUnavailable):
        guarded.chat([], max_tokens=1, temperature=0.0)
    assert failing.calls == 1 and cooldown.state() is not None and len(touched) == 1  # the call's end
    with pytest.raises(EndpointCoolingDown):
        guarded.chat([], max_tokens=1, temperature=0.0)
    assert failing.calls == 1  # no call reached the endpoint
    # An answer of any kind, even a refusal, means the endpoint is up again.
    cooldown.redis.hset(cooldown.key, "until", time.time() - 0.01)
    refusing = GuardedBackend(_Backend(ConfigError("refused the API key")), cooldown)
    with pytest.raises(ConfigError):
        refusing.chat([], max_tokens=1, temperature=0.0)
    assert cooldown.state() is None


# -- the local engine: a deadline on every call, and a dead engine is not kept ------------------


def test_a_call_into_the_local_engine_has_a_deadline() -> None:
    from maie.backends.local_vllm import await_completion

    never: Future[Completion] = Future()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="LLM engine of enhance did not answer within 0.3 s"):
        await_completion(never, 0.3, lambda: None, "LLM engine of enhance")
    assert time.monotonic() - started < 5


def test_a_dead_local_engine_fails_its_callers_at_once_and_a_live_one_answers() -> None:
    from maie.backends.local_vllm import await_completion

    with pytest.raises(BackendUnavailable, match="engine is dead"):
        await_completion(Future(), 300, lambda: "engine is dead", "engine")
    later: Future[Completion] = Future()
    threading.Timer(0.2, later.set_result, [Completion(text="ok", finish_reason="stop")]).start()
    assert await_completion(later, 30, lambda: None, "engine").text == "ok"


def test_a_dead_backend_is_not_kept_the_next_task_gets_a_new_one() -> None:
    from maie.backends import get_backend, reset_backends
    from maie.settings import load_settings

    settings = load_settings(env_file=None)
    reset_backends()
    try:
        first = get_backend("enhance", settings)
        assert get_backend("enhance", settings) is first
        first.dead = True  # type: ignore[attr-defined]  # what a local engine reports once it died
        second = get_backend("enhance", settings)
        assert second is not first and get_backend("enhance", settings) is second
    finally:
        reset_backends()
