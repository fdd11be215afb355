"""Chunking: turns packed in order under a token budget, long turns cut at sentences then words."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from maie.chunking import (
    Chunk,
    TokenCounter,
    approx_token_count,
    chunk_segments,
    load_token_counter,
)
from maie.inputs import Segment, load_transcript, segments_to_text

DEV_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "summary_dev.jsonl"

VIETNAMESE = (
    "Chủ tọa: Xin chào các bạn. Hôm nay chúng ta bàn về ngân sách quý ba. "
    "Phòng kỹ thuật đã gửi báo cáo chưa? Tôi muốn nghe ý kiến của mọi người trước khi quyết định!\n"
    "Chị Lan: Báo cáo đã gửi hôm qua… Chi phí tăng khoảng mười phần trăm so với dự kiến.\n"
    "Anh Minh: Tôi đồng ý với chị Lan."
)


def words_by_speaker(segments: Sequence[Segment]) -> list[tuple[str | None, str]]:
    return [(segment.speaker, word) for segment in segments for word in segment.text.split()]


def chunk_words(chunks: Sequence[Chunk]) -> list[tuple[str | None, str]]:
    return words_by_speaker([segment for chunk in chunks for segment in chunk.segments])


def assert_invariants(
    segments: Sequence[Segment], chunks: Sequence[Chunk], max_tokens: int, count: TokenCounter
) -> None:
    """Nothing lost, duplicated or reordered; speakers kept; every chunk within budget."""
    assert chunk_words(chunks) == words_by_speaker(segments)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    if any(segment.text for segment in segments):
        assert chunks
    for chunk in chunks:
        assert chunk.text == segments_to_text(chunk.segments)
        assert chunk.tokens == count(chunk.text)
        single_word = len(chunk.segments) == 1 and len(chunk.segments[0].text.split()) == 1
        assert chunk.tokens <= max_tokens or single_word, chunk.text


def word_count(text: str) -> int:
    return len(text.split())


def test_approx_token_count_errs_high() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("hi") == 2  # one word counts 4/3, rounded up
    assert approx_token_count("a" * 400) == 100  # a long run: one token per 4 bytes
    text = "The quick brown fox jumps over the lazy dog."
    assert approx_token_count(text) >= len(text.split())
    # Vietnamese diacritics take more UTF-8 bytes, so they count for more than plain letters.
    assert approx_token_count("Người điều hành") > approx_token_count("Nguoi dieu hanh")


def test_turns_are_packed_in_order_under_budget() -> None:
    segments = [Segment(f"turn number {i} says a few words.", f"S{i % 3}") for i in range(40)]
    chunks = chunk_segments(segments, 60)
    assert len(chunks) > 1
    assert [s for chunk in chunks for s in chunk.segments] == segments  # no turn was cut
    assert_invariants(segments, chunks, 60, approx_token_count)


def test_everything_fits_in_one_chunk() -> None:
    segments = load_transcript(VIETNAMESE)
    (chunk,) = chunk_segments(segments, 10_000)
    assert chunk.segments == tuple(segments)
    assert chunk.text == VIETNAMESE


def test_long_turn_is_cut_at_sentence_ends() -> None:
    sentences = [f"Sentence {n} has exactly six words." for n in range(10)]
    segment = Segment(" ".join(sentences), "Alice", 10.0, 20.0)
    chunks = chunk_segments([segment], 30, word_count)
    pieces = [s for chunk in chunks for s in chunk.segments]
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.speaker == "Alice"
        assert piece.text.endswith(".")  # each piece ends where a sentence does
        assert piece.text.split()[0] == "Sentence"
    assert_invariants([segment], chunks, 30, word_count)
    # Times are interpolated by word position, from the turn's start to its end.
    assert pieces[0].start == 10.0 and pieces[-1].end == 20.0
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))


def test_long_sentence_is_cut_between_words() -> None:
    words = [f"w{n}" for n in range(100)]
    segment = Segment(" ".join(words), "Bob")
    chunks = chunk_segments([segment], 12, word_count)
    assert all(chunk.tokens <= 12 for chunk in chunks)
    assert all(chunk.text.startswith("Bob: ") for chunk in chunks)
    assert [w for c in chunks for w in c.text.removeprefix("Bob: ").split()] == words
    assert_invariants([segment], chunks, 12, word_count)


def test_sentences_end_with_other_marks_and_quotes() -> None:
    text = 'Really? Yes I am! "Quoted, yes." Trailing… Done'
    chunks = chunk_segments([Segment(text)], 3, word_count)
    # Cutting between words alone would give "Really? Yes I": sentence ends come first.
    assert [c.text for c in chunks] == ["Really?", "Yes I am!", '"Quoted, yes." Trailing…', "Done"]


def test_pieces_without_both_times_keep_the_ends() -> None:
    segment = Segment("One two. Three four. Five six.", "A", start=3.0)
    pieces = [s for c in chunk_segments([segment], 3, word_count) for s in c.segments]
    assert [(p.start, p.end) for p in pieces] == [(3.0, None), (None, None), (None, None)]


def test_a_word_over_the_budget_is_cut_between_characters_in_order() -> None:
    long_word = "x" * 200
    segments = [Segment(f"short {long_word} tail", "Spk")]
    chunks = chunk_segments(segments, 5)
    assert all(c.tokens <= 5 for c in chunks), [c.text for c in chunks]
    words = [w for c in chunks for seg in c.segments for w in seg.text.split()]
    assert words[0] == "short" and words[-1] == "tail"
    assert "".join(words[1:-1]) == long_word
    assert all(seg.speaker == "Spk" for c in chunks for seg in c.segments)


@pytest.mark.parametrize("speaker", [None, "Speaker A"])
def test_a_200000_character_line_without_spaces_is_split_within_budget(speaker: str | None) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    chunks = chunk_segments([Segment(text, speaker)], 512)
    assert len(chunks) >= 200_000 // 4 // 512  # about 98: 4 bytes a token
    assert all(c.tokens <= 512 for c in chunks)
    assert "".join(seg.text for c in chunks for seg in c.segments) == text


def test_vietnamese_text_is_cut_at_sentences_with_speakers() -> None:
    segments = load_transcript(VIETNAMESE)
    for budget in (8, 16, 32, 64):
        chunks = chunk_segments(segments, budget)
        assert_invariants(segments, chunks, budget, approx_token_count)
        for chunk in chunks:
            for line in chunk.text.split("\n"):
                assert line.split(": ", 1)[0] in {"Chủ tọa", "Chị Lan", "Anh Minh"}
    pieces = [s for c in chunk_segments(segments, 24) for s in c.segments]
    assert any(p.text == "Phòng kỹ thuật đã gửi báo cáo chưa?" for p in pieces)
    assert any(p.text.endswith("hôm qua…") for p in pieces)


def test_empty_input_and_bad_budget() -> None:
    assert chunk_segments([], 10) == []
    assert chunk_segments([Segment("", "A")], 10) == []
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_segments([Segment("a")], 0)


def test_budget_holds_with_a_counter_that_is_not_additive() -> None:
    # Each extra line costs more than the last, so summing per-segment counts under-estimates.
    def lines_squared(text: str) -> int:
        return len(text.split()) + (text.count("\n") + 1) ** 2

    segments = [Segment(f"turn {n} words here", "S") for n in range(30)]
    chunks = chunk_segments(segments, 100, lines_squared)
    assert_invariants(segments, chunks, 100, lines_squared)
    assert max(len(chunk.segments) for chunk in chunks) > 1


def _dev_segments() -> list[list[Segment]]:
    if not DEV_DATA.exists():
        pytest.skip(f"{DEV_DATA} is absent")
    rows = [json.loads(line) for line in DEV_DATA.read_text(encoding="utf-8").splitlines()]
    return [load_transcript(row["transcript"]) for row in rows]


@pytest.mark.parametrize("budget", [64, 512])
def test_dev_transcripts_keep_every_word(budget: int) -> None:
    for segments in _dev_segments():
        chunks = chunk_segments(segments, budget)
        assert_invariants(segments, chunks, budget, approx_token_count)
        # When no turn had to be cut, the chunks' texts hold exactly the transcript's words.
        if sum(len(chunk.segments) for chunk in chunks) == len(segments):
            source_words = segments_to_text(segments).split()
            assert [w for c in chunks for w in c.text.split()] == source_words


def _tokenizer_dir(tmp_path: Path) -> Path:
    """Train a small BPE tokenizer and save it as `tokenizer.json`, as a model directory has."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import Whitespace
    from tokenizers.trainers import BpeTrainer

    tokenizer = tokenizers.Tokenizer(BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    trainer = BpeTrainer(vocab_size=200, special_tokens=["[UNK]"], show_progress=False)
    corpus = [VIETNAMESE, "The meeting opened at nine. Budget was the first item."] * 5
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_tokenizer_json_counter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = _tokenizer_dir(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="maie.chunking"):
        count = load_token_counter(str(model_dir))
    assert count is not approx_token_count
    assert "tokenizer" in caplog.text and "tokenizer.json" in caplog.text
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    sample = "Chị Lan: Báo cáo đã gửi hôm qua."
    assert count(sample) == len(reference.encode(sample, add_special_tokens=False).ids)
    assert count("") == 0
    segments = load_transcript(VIETNAMESE)
    for budget in (10, 25, 60):
        assert_invariants(segments, chunk_segments(segments, budget, count), budget, count)


def test_counter_falls_back_to_the_approximation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_token_counter(None) is approx_token_count
    assert load_token_counter("") is approx_token_count
    assert load_token_counter("Qwen/Qwen2.5-0.5B-Instruct") is approx_token_count  # no download
    assert load_token_counter(str(tmp_path)) is approx_token_count  # no tokenizer.json
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    assert load_token_counter(str(tmp_path)) is approx_token_count  # unreadable file
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # the package is not installed
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_text("{}", encoding="utf-8")
    assert load_token_counter(str(model_dir)) is approx_token_count
