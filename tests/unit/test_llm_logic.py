"""Enhancement and summary logic, driven directly (no Celery) by a scripted backend."""

from __future__ import annotations

import json

import pytest
from scripted_backend import ScriptedBackend, reply

from maie.enhance import build_messages, enhance_chunk_text, speaker_labels, word_edit_rate
from maie.errors import BackendRejected
from maie.settings import LlmTaskSettings
from maie.summary import build_messages as build_summary_messages
from maie.summary import summarize_text
from maie.templates import load_template

CFG = LlmTaskSettings(temperature=0.3)
RAW = "Anna: so we agree the budget is ten thousand\nBen: yes and we ship in may"
GOOD = "Anna: So we agree, the budget is ten thousand.\nBen: Yes, and we ship in May."


def test_edit_rate_ignores_punctuation_and_case() -> None:
    assert word_edit_rate(RAW, GOOD) == 0.0
    assert word_edit_rate("a b c d", "a x c d") == 0.25
    assert speaker_labels(GOOD) == ["Anna", "Ben"]


def test_faithful_reply_is_kept() -> None:
    backend = ScriptedBackend([reply(GOOD)])
    out = enhance_chunk_text(backend, 0, RAW, CFG, 0.15)
    assert (out.text, out.degraded, out.attempts) == (GOOD, False, 1)
    assert backend.calls[0]["messages"] == build_messages(RAW)
    assert backend.calls[0]["temperature"] == 0.3


def test_unfaithful_reply_is_retried_at_temperature_zero_then_kept() -> None:
    backend = ScriptedBackend([reply("Totally different words here."), reply(GOOD)])
    out = enhance_chunk_text(backend, 1, RAW, CFG, 0.15)
    assert out.text == GOOD and not out.degraded and out.attempts == 2
    assert [c["temperature"] for c in backend.calls] == [0.3, 0.0]


def test_twice_unfaithful_keeps_the_raw_text_marked_degraded() -> None:
    backend = ScriptedBackend([reply("Nothing alike."), reply("Still nothing alike.")])
    out = enhance_chunk_text(backend, 2, RAW, CFG, 0.15)
    assert out.text == RAW and out.degraded and out.edit_rate > 0.15


def test_dropped_speaker_label_is_unfaithful() -> None:
    relabelled = GOOD.replace("Ben:", "Benjamin:")
    backend = ScriptedBackend([reply(relabelled), reply(relabelled)])
    assert enhance_chunk_text(backend, 0, RAW, CFG, 0.5).degraded


def test_truncated_enhancement_is_never_accepted() -> None:
    backend = ScriptedBackend([reply(GOOD, "length"), reply(GOOD, "length")])
    assert enhance_chunk_text(backend, 0, RAW, CFG, 0.15).degraded


TEMPLATE = load_template("generic_summary")


def valid_summary() -> str:
    return json.dumps(TEMPLATE.example)


def test_summary_valid_first_time() -> None:
    backend = ScriptedBackend([reply(valid_summary())], max_model_len=8192)
    out = summarize_text(backend, TEMPLATE, "Anna: hello", CFG)
    assert out.data == TEMPLATE.example and out.attempts == 1
    assert backend.calls[0]["json_schema"] == TEMPLATE.schema
    assert TEMPLATE.schema_json in backend.calls[0]["messages"][1]["content"]


def test_invalid_json_gets_one_repair_with_the_error() -> None:
    backend = ScriptedBackend([reply('{"title": '), reply(valid_summary())], max_model_len=8192)
    out = summarize_text(backend, TEMPLATE, "Anna: hello", CFG)
    assert out.attempts == 2
    repair = backend.calls[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"title": '}
    assert "not valid JSON" in repair[-1]["content"]


def test_still_invalid_after_repair_fails_with_errors() -> None:
    backend = ScriptedBackend([reply("{}"), reply("{}")], max_model_len=8192)
    with pytest.raises(BackendRejected, match="required property"):
        summarize_text(backend, TEMPLATE, "Anna: hello", CFG)


def test_truncated_reply_is_retried_with_a_larger_budget() -> None:
    cfg = LlmTaskSettings(max_tokens=100)
    backend = ScriptedBackend([reply('{"ti', "length"), reply(valid_summary())], max_model_len=8192)
    out = summarize_text(backend, TEMPLATE, "Anna: hello", cfg)
    assert out.data == TEMPLATE.example
    assert [c["max_tokens"] for c in backend.calls] == [100, 200]


def test_truncated_reply_without_room_fails_saying_so() -> None:
    prompt_words = len("\n".join(m["content"] for m in build_summary_messages(TEMPLATE, "x")).split())
    backend = ScriptedBackend([reply('{"ti', "length")], max_model_len=prompt_words + 32 + 50)
    with pytest.raises(BackendRejected, match="cut off.*no room"):
        summarize_text(backend, TEMPLATE, "x", LlmTaskSettings(max_tokens=1000))
