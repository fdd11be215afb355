"""Constrained enhancement: the pattern built from a chunk, and how the LLM logic uses it."""

from __future__ import annotations

import re

import pytest
from scripted_backend import ScriptedBackend, reply

from maie.enhance import enhance_chunk_text, reply_budget
from maie.enhance_regex import words_regex
from maie.settings import LlmTaskSettings, Settings

RAW = "Anna: so we agree the budget is ten thousand\nBen: yes and we ship in may"
GOOD = "Anna: So, we agree the budget is ten thousand.\nBen: Yes, and we ship in May!"


def accepts(raw: str, text: str) -> bool:
    return re.fullmatch(words_regex(raw), text) is not None


@pytest.mark.parametrize(
    "text",
    [RAW, GOOD, "Anna: So we agree. The budget is ten thousand?\nBen: Yes. And we ship in May."],
)
def test_the_faithful_texts_match(text: str) -> None:
    assert accepts(RAW, text)


@pytest.mark.parametrize(
    "text",
    [
        "Anna: So, we agree the budget is thousand.\nBen: Yes, and we ship in May!",  # dropped
        "Anna: So, we all agree the budget is ten thousand.\nBen: Yes, and we ship in May!",  # added
        "Anna: So, we agree the budget is thousand ten.\nBen: Yes, and we ship in May!",  # reordered
        "Anna: So, we agree the budget is ten thousand.\nBen: Yes, and we ship in June!",  # replaced
        "Anna: So, we agree the budget is ten thousand.\nBenjamin: Yes, and we ship in May!",  # label
        "Anna: So, we agree the budget is ten thousand. Ben: Yes, and we ship in May!",  # line joined
        "Anna: So, we agree the budget is ten thousand.\nBen: Yes, and we ship in May!!",  # two marks
        "Anna: So; we agree the budget is ten thousand.\nBen: Yes, and we ship in May.",  # other mark
        "Anna: So, we agree the bUdget is ten thousand.\nBen: Yes, and we ship in May.",  # inner case
        "Anna: SO, we agree the budget is ten thousand.\nBen: Yes, and we ship in May.",  # not first
        "Anna: So,  we agree the budget is ten thousand.\nBen: Yes, and we ship in May.",  # spaces
        "Anna: So, we agree the budget is ten thousand.\nBen: Yes, and we ship in May. Okay.",  # more
    ],
)
def test_dropped_added_reordered_or_changed_words_do_not_match(text: str) -> None:
    assert not accepts(RAW, text)


def test_metacharacters_marks_and_unicode_are_literal() -> None:
    raw = "so c++ (um) [x] costs $3.5 a|b, ok ... đúng vậy"
    pattern = words_regex(raw)
    assert re.fullmatch(pattern, "So c++ (um) [x] costs $3.5 a|b, ok. Đúng vậy?")
    assert re.fullmatch(pattern, "so c++ (um) [x] costs $3.5 a|b ok đúng vậy")
    assert not re.fullmatch(pattern, "so c+ (um) [x] costs $3.5 a|b ok đúng vậy")
    assert not re.fullmatch(pattern, "so c++ um [x] costs $3.5 a|b ok đúng vậy")
    # Only metacharacters (and line breaks) are escaped: engines warn about any other escape.
    assert {m[1] for m in re.findall(r"\\.", pattern)} <= set("\\.^$|?*+()[]{}n")


def test_a_quoted_word_may_capitalise_its_first_letter() -> None:
    assert accepts('he said "okay" then', 'He said "Okay", then.')


def test_empty_lines_and_label_only_lines_are_kept() -> None:
    raw = "Anna: hello\n\nBen: hi there"
    assert accepts(raw, "Anna: Hello.\n\nBen: Hi there.")
    assert not accepts(raw, "Anna: Hello.\nBen: Hi there.")


def test_xgrammar_reads_the_pattern_as_python_does() -> None:
    xgrammar = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string

    raw = "anna: so c++ (um) costs $3.5\nben: đúng vậy, okay"
    grammar = xgrammar.Grammar.from_regex(words_regex(raw))
    for text, expected in [
        ("anna: So c++ (um) costs $3.5.\nben: Đúng vậy, okay.", True),
        ("anna: so c++ (um) costs $3.5\nben: đúng vậy okay", True),
        ("anna: so c++ um costs $3.5\nben: đúng vậy okay", False),
        ("anna: so c++ (um) costs $3.5\nben: vậy đúng okay", False),
    ]:
        assert accepts(raw, text) is expected
        assert _is_grammar_accept_string(grammar, text) is expected, text


# -- the LLM logic ---------------------------------------------------------------------------------
CFG = LlmTaskSettings(temperature=0.3)


def test_constrained_mode_sends_the_chunks_pattern_and_keeps_a_faithful_reply() -> None:
    backend = ScriptedBackend([reply(GOOD)])
    out = enhance_chunk_text(backend, 0, RAW, CFG, 0.15, "constrained")
    assert (out.text, out.degraded) == (GOOD, False)
    pattern = backend.calls[0]["regex"]
    assert pattern == words_regex(RAW)
    assert re.fullmatch(pattern, GOOD) and re.fullmatch(pattern, RAW)


def test_free_mode_sends_no_pattern() -> None:
    backend = ScriptedBackend([reply(GOOD)])
    enhance_chunk_text(backend, 0, RAW, CFG, 0.15)
    assert backend.calls[0]["regex"] is None


def test_a_server_that_ignores_the_constraint_is_still_caught() -> None:
    backend = ScriptedBackend([reply("Totally different words."), reply("Still different.")])
    out = enhance_chunk_text(backend, 0, RAW, CFG, 0.15, "constrained")
    assert out.degraded and out.text == RAW
    assert all(c["regex"] == words_regex(RAW) for c in backend.calls)


def test_each_half_of_a_chunk_too_long_for_the_context_gets_its_own_pattern() -> None:
    halves = [reply("Anna: So we agree the budget is ten thousand."), reply("Ben: Yes and we ship in May.")]
    # Room for one line's prompt and reply, not for both lines'.
    backend = ScriptedBackend(halves, max_model_len=190)
    assert reply_budget(backend, RAW, CFG, "constrained") is None
    out = enhance_chunk_text(backend, 0, RAW, CFG, 0.15, "constrained")
    assert not out.degraded and len(backend.calls) == 2
    first, second = RAW.split("\n")
    assert [c["regex"] for c in backend.calls] == [words_regex(first), words_regex(second)]


def test_a_constrained_reply_may_use_the_room_left_in_the_context() -> None:
    text = "\n".join([RAW] * 4)
    backend = ScriptedBackend([], max_model_len=8192)
    free = reply_budget(backend, text, CFG)
    constrained = reply_budget(backend, text, CFG, "constrained")
    assert free is not None and constrained is not None
    # Bytes plus a mark per word bound any reply the pattern allows, however it is tokenized.
    assert constrained >= len(text.encode()) + len(text.split()) > free
    # LLM_ENHANCE__MAX_TOKENS caps a free reply, not a constrained one (the pattern cannot ramble).
    assert reply_budget(backend, text, LlmTaskSettings(max_tokens=150), "free") == 150
    assert reply_budget(backend, text, LlmTaskSettings(max_tokens=150), "constrained") == constrained
    # Never more than the context leaves.
    tight = ScriptedBackend([], max_model_len=400)
    room = reply_budget(tight, text, CFG, "constrained")
    assert room is not None and free <= room < constrained


def test_free_decoding_stays_the_default() -> None:
    assert Settings.model_construct().enhance_mode == "free"
    assert Settings(_env_file=None, enhance_mode="constrained").enhance_mode == "constrained"  # type: ignore[call-arg]
