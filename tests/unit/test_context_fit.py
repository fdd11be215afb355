"""Requests planned to fit the model's context: enhancement halves, notes halves, group plans."""

from __future__ import annotations

import pytest
from scripted_backend import EchoBackend

from maie.chunking import approx_token_count, chunk_segments
from maie.enhance import build_messages, enhance_chunk_text, max_chunk_tokens
from maie.errors import ContextExceeded
from maie.inputs import Segment
from maie.settings import LlmTaskSettings
from maie.summary import fits_in_one_call, notes_budget, partial_notes, plan_groups
from maie.templates import load_template
from maie.tokens import ESTIMATE_MARGIN, prompt_tokens

CFG = LlmTaskSettings(temperature=0.3)
LINES = [f"S{i % 2}: line {i} has some plain words in it" for i in range(40)]
CHUNK = "\n".join(LINES)


def test_a_chunk_too_long_for_the_context_is_enhanced_in_halves_that_fit() -> None:
    backend = EchoBackend([], max_model_len=200)
    out = enhance_chunk_text(backend, 3, CHUNK, CFG, 0.15)
    assert out.text == CHUNK and not out.degraded
    assert len(backend.calls) > 1
    for call in backend.calls:
        assert prompt_tokens(backend, call["messages"]) + call["max_tokens"] <= 200
    # Halves go in order, each whole lines: together they are the chunk.
    assert "\n".join(c["messages"][-1]["content"] for c in backend.calls) == CHUNK


def test_a_context_refusal_from_the_server_halves_the_chunk() -> None:
    refused = ContextExceeded("maximum context length")
    backend = EchoBackend([refused, refused], max_model_len=8192)
    out = enhance_chunk_text(backend, 0, CHUNK, CFG, 0.15)
    assert out.text == CHUNK and not out.degraded
    # Refused whole with the estimated budget, then whole with the exact count, then two halves.
    assert len(backend.calls) == 4
    estimated, counted = (call["max_tokens"] for call in backend.calls[:2])
    assert counted < estimated


def test_a_chunk_that_fits_by_the_estimate_is_not_counted() -> None:
    class Counting(EchoBackend):
        counts = 0

        def count_tokens(self, text: str) -> int | None:
            self.counts += 1
            return super().count_tokens(text)

    backend = Counting([], max_model_len=8192)
    assert enhance_chunk_text(backend, 0, CHUNK, CFG, 0.15).text == CHUNK
    assert backend.counts == 0 and len(backend.calls) == 1
    # Too long by the estimate, not by the exact count: counted, and sent whole.
    exact = int(len(CHUNK.split()) * 1.5) + 64 + prompt_tokens(backend, build_messages(CHUNK))
    assert exact < approx_token_count(CHUNK) * ESTIMATE_MARGIN * 2.5
    tight = Counting([], max_model_len=exact + 5)
    assert enhance_chunk_text(tight, 0, CHUNK, CFG, 0.15).text == CHUNK
    assert tight.counts > 0 and len(tight.calls) == 1


def test_one_long_line_is_halved_between_words_then_characters() -> None:
    line = "Ann: " + " ".join(["word"] * 300)
    backend = EchoBackend([], max_model_len=300)
    assert enhance_chunk_text(backend, 0, line, CFG, 0.15).text == line
    blob = "y" * 3000
    backend = EchoBackend([], max_model_len=400)
    backend.exact = False
    assert enhance_chunk_text(backend, 0, blob, CFG, 0.15).text == blob


def test_chunk_max_tokens_is_clamped_to_what_the_context_holds() -> None:
    cfg = LlmTaskSettings(max_tokens=4096)
    limit = max_chunk_tokens(1024, cfg)
    assert 100 < limit < 1024 // 2
    words = " ".join(["meeting"] * 2000)
    chunks = chunk_segments([Segment(words, "A")], limit)
    backend = EchoBackend([], max_model_len=1024)
    backend.exact = False  # estimates with their margin, as against a server without /tokenize
    for chunk in chunks:
        enhance_chunk_text(backend, chunk.index, chunk.text, cfg, 0.15)
    assert len(backend.calls) == len(chunks)  # each chunk fit whole: no halving was needed


def test_notes_refused_as_too_long_are_taken_in_halves() -> None:
    backend = EchoBackend([ContextExceeded("maximum context length")], max_model_len=8192)
    out = partial_notes(backend, ["part one words", "part two words", "part three"], "en", CFG)
    assert len(backend.calls) == 3
    assert out.text.count("<transcript>") == 2  # the echo of two half prompts, in order
    assert out.text.index("part one") < out.text.index("part three")


def test_groups_planned_from_estimates_keep_the_margin() -> None:
    texts = [" ".join(["conversational"] * 50) for _ in range(60)]
    backend = EchoBackend([], max_model_len=2048, exact=False)
    groups = plan_groups(texts, backend, LlmTaskSettings(max_tokens=512), "en")
    assert groups[0][0] == 0 and groups[-1][1] == len(texts)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    for start, end in groups:
        estimate = approx_token_count("\n".join(texts[start:end])) * ESTIMATE_MARGIN
        assert estimate + notes_budget(backend, LlmTaskSettings(max_tokens=512), "en") < 2048


def test_a_smaller_context_scale_splits_sooner() -> None:
    template = load_template("generic_summary")
    text = " ".join(["word"] * 2500)
    backend = EchoBackend([], max_model_len=8192)
    cfg = LlmTaskSettings(max_tokens=1024)
    assert fits_in_one_call(backend, template, text, cfg)
    assert not fits_in_one_call(backend, template, text, cfg, scale=0.375)


@pytest.mark.parametrize("exact", [True, False])
def test_a_group_always_holds_at_least_two_notes_so_levels_end(exact: bool) -> None:
    """Notes fill their whole budget (as a small random model's do): each level still halves,
    counted exactly (one token a word here) or estimated (plain speech, about 1.3 tokens a word)."""
    speech = "we agreed that the remote should be yellow and ship in may".split()
    for context in (1024, 2048, 8192):
        backend = EchoBackend([], max_model_len=context, exact=exact)
        cfg = LlmTaskSettings(max_tokens=1024)
        budget = notes_budget(backend, cfg, "en")
        words = budget if exact else int(budget / 1.3)
        note = " ".join(speech[i % len(speech)] for i in range(words))
        texts = [note] * 40
        levels = 0
        while len(texts) > 1:
            groups = plan_groups(texts, backend, cfg, "en")
            assert len(groups) <= (len(texts) + 1) // 2, (context, len(texts), groups)
            texts = [note] * len(groups)
            levels += 1
        assert levels <= 6
