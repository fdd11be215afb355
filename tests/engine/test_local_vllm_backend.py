"""LocalVllmBackend against a real vLLM CPU engine: one engine for the whole module."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest

from maie.backends.base import Completion, Message
from maie.errors import BackendRejected, BackendUnavailable, ConfigError
from maie.settings import LlmTaskSettings

pytestmark = [
    pytest.mark.engine,
    # Raised inside vLLM's engine start-up by torch itself; not ours to fix.
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

MAX_MODEL_LEN = 1024
HELLO: list[Message] = [{"role": "user", "content": "Xin chào, please summarise the meeting."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "label": {"enum": ["decision", "action", "question"]},
        "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3},
    },
    "required": ["ok", "label", "tags"],
    "additionalProperties": False,
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def load_log() -> Iterator[list[str]]:
    handler = _Records()
    log = logging.getLogger("maie.backends.local_vllm")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    yield handler.messages
    log.removeHandler(handler)
    log.setLevel(old_level)


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path, load_log: list[str]) -> Iterator[object]:
    from maie.backends.local_vllm import LocalVllmBackend

    cfg = LlmTaskSettings(
        model=str(tiny_model_dir),
        max_model_len=MAX_MODEL_LEN,
        max_num_seqs=8,
        cpu_kvcache_space_gb=1,
        enforce_eager=True,  # no torch.compile: loads in seconds instead of a minute
    )
    b = LocalVllmBackend("enhance", cfg)
    yield b
    b.close()


def test_identity_and_single_load(backend: object, tiny_model_dir: Path, load_log: list[str]) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    assert backend.kind == "local_vllm"
    assert backend.task == "enhance"
    assert backend.model == str(tiny_model_dir)
    assert backend.endpoint == f"local:{tiny_model_dir}"
    loaded = [m for m in load_log if "LLM engine loaded" in m]
    assert len(loaded) == 1
    assert "enhance" in loaded[0] and str(tiny_model_dir) in loaded[0]


def test_chat_answers(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    c = backend.chat(HELLO, max_tokens=8, temperature=0.0)
    assert isinstance(c, Completion)
    assert isinstance(c.text, str)
    assert c.finish_reason in ("stop", "length")
    assert c.prompt_tokens is not None and c.prompt_tokens > 0
    assert c.completion_tokens is not None and 1 <= c.completion_tokens <= 8


def test_ignore_eos_fills_max_tokens(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    c = backend.chat(HELLO, max_tokens=12, temperature=0.7, top_p=0.9, ignore_eos=True)
    assert c.completion_tokens == 12
    assert c.finish_reason == "length"


def test_json_schema_output_validates(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    for temperature in (0.0, 1.0):
        c = backend.chat(HELLO, max_tokens=64, temperature=temperature, json_schema=SCHEMA)
        assert c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.text), SCHEMA)


def test_concurrent_calls_are_batched(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)

    def one(i: int) -> Completion:
        messages: list[Message] = [{"role": "user", "content": f"Speaker {i}: hello."}]
        return backend.chat(messages, max_tokens=32, temperature=0.0, ignore_eos=True)

    started = time.monotonic()
    for i in range(8):
        one(i)
    sequential = time.monotonic() - started

    barrier = threading.Barrier(8)

    def together(i: int) -> Completion:
        barrier.wait()
        return one(i)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(together, range(8)))
    concurrent = time.monotonic() - started

    assert [r.completion_tokens for r in results] == [32] * 8
    # One request at a time would take as long as the sequential run; batches take a fraction.
    assert concurrent < 0.7 * sequential, (concurrent, sequential)


def test_tokens_and_context(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    assert backend.max_model_len == MAX_MODEL_LEN
    assert backend.count_tokens("") == 0
    short = backend.count_tokens("cuộc họp")
    assert short > 0
    assert backend.count_tokens("cuộc họp " * 10) > 5 * short


def test_max_tokens_is_clamped_to_the_context(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    per_word = backend.count_tokens("meeting " * 100) / 100
    words = "meeting " * int((MAX_MODEL_LEN - 100) / per_word)
    c = backend.chat([{"role": "user", "content": words}], max_tokens=500, temperature=0.0, ignore_eos=True)
    assert c.prompt_tokens is not None and c.completion_tokens is not None
    assert c.completion_tokens < 500
    assert c.prompt_tokens + c.completion_tokens == MAX_MODEL_LEN
    assert c.finish_reason == "length"


def test_prompt_longer_than_context_is_rejected(backend: object) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    with pytest.raises(BackendRejected, match=f"{MAX_MODEL_LEN}-token context"):
        backend.chat(
            [{"role": "user", "content": "meeting " * 2 * MAX_MODEL_LEN}],
            max_tokens=16,
            temperature=0.0,
        )
    # The engine keeps serving after a rejection.
    assert backend.chat(HELLO, max_tokens=4, temperature=0.0).completion_tokens


def test_constrained_enhancement_keeps_every_word(backend: object) -> None:
    from helpers import CONSTRAINED_CHUNK as chunk

    from maie.backends.local_vllm import LocalVllmBackend
    from maie.enhance import enhance_chunk_text, normalize_words, speaker_labels
    from maie.enhance_regex import words_regex

    assert isinstance(backend, LocalVllmBackend)
    # The random model writes noise: free, it fails the faithfulness check; bound by the chunk's
    # pattern it can only choose case and marks, even when sampling at temperature 1.
    cfg = LlmTaskSettings(temperature=1.0)
    out = enhance_chunk_text(backend, 0, chunk, cfg, 0.0, "constrained")
    assert not out.degraded and out.attempts == 1, out
    assert normalize_words(out.text) == normalize_words(chunk)
    assert speaker_labels(out.text) == ["Anna", "Minh"]
    assert re.fullmatch(words_regex(chunk), out.text)
    assert enhance_chunk_text(backend, 0, chunk, cfg, 0.0, "free").degraded


def test_missing_vllm_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match=r"pip install 'maie\[cpu\]'"):
        LocalVllmBackend("summary", LlmTaskSettings())


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    from maie.backends.local_vllm import LocalVllmBackend

    with pytest.raises(ConfigError, match="could not load the summary LLM engine"):
        LocalVllmBackend("summary", LlmTaskSettings(model=str(tmp_path / "no-such-model")))


def test_dead_engine_is_unavailable(backend: object) -> None:
    # Runs last in this module: it kills the shared engine's core process.
    import psutil

    from maie.backends.local_vllm import LocalVllmBackend

    assert isinstance(backend, LocalVllmBackend)
    cores = [p for p in psutil.Process().children() if "EngineCore" in p.name()]
    assert len(cores) == 1, cores

    def long_call(i: int) -> Completion:
        return backend.chat(HELLO, max_tokens=900, temperature=0.0, ignore_eos=True)

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(long_call, i) for i in range(4)]
        time.sleep(0.2)
        cores[0].kill()
        for future in running:
            with pytest.raises(BackendUnavailable, match="dead"):
                future.result(timeout=60)
    with pytest.raises(BackendUnavailable, match="dead"):
        backend.chat(HELLO, max_tokens=4, temperature=0.0)
    started = time.monotonic()
    backend.close()
    backend.close()  # a second close is harmless
    assert time.monotonic() - started < 30
