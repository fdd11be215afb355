"""Chunking: pack transcript segments into chunks that fit a token budget.

Whole turns are kept together when they fit. A turn over the budget is cut at sentence ends, and a
sentence over the budget between words; a "word" over the budget on its own (a transcript without
spaces: unsegmented scripts, a garbled export) between characters, so every chunk fits. Every piece
of a cut turn keeps the turn's speaker, so each chunk reads as `Speaker: text` lines on its own.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from maie.inputs import Segment, segments_to_text

__all__ = [
    "TokenCounter",
    "Chunk",
    "approx_token_count",
    "load_token_counter",
    "chunk_segments",
]

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]

# A word ending in one of these (after any closing quotes or brackets) ends a sentence. Vietnamese
# uses the same Latin punctuation; the CJK full-width marks cost nothing to include.
_SENTENCE_END = re.compile(r"[.?!…。！？]+[\"'”’»)\]]*$")

_T = TypeVar("_T")


def approx_token_count(text: str) -> int:
    """Estimate the tokens of `text` without a tokenizer: max(ceil(bytes/4), ceil(words*4/3)).

    Uses UTF-8 bytes rather than characters so Vietnamese diacritics (two or three bytes each)
    count for more, as they do in BPE vocabularies; the word term covers short-word text. It errs
    high on purpose: an over-estimate only makes chunks a little smaller, an under-estimate could
    overflow the model's context.
    """
    if not text:
        return 0
    by_bytes = math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)
    by_words = math.ceil(len(text.split()) * 4 / 3)
    return max(by_bytes, by_words)


def load_token_counter(model: str | None) -> TokenCounter:
    """Return a token counter for `model`, never downloading anything.

    When `model` is a local directory holding `tokenizer.json` and the `tokenizers` package is
    installed, tokens are counted exactly (without special tokens). Otherwise, including for a
    hub model id, `approx_token_count` is used.
    """
    if not model:
        log.debug("token counting: approximation (no model given)")
        return approx_token_count
    path = Path(model).expanduser() / "tokenizer.json"
    if not path.is_file():
        log.debug("token counting: approximation (no %s)", path)
        return approx_token_count
    try:
        from tokenizers import Tokenizer
    except ImportError:
        log.debug("token counting: approximation (the tokenizers package is not installed)")
        return approx_token_count
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # a corrupt or newer-format file: counting still works without it
        log.warning("token counting: approximation (cannot load %s: %s)", path, exc)
        return approx_token_count
    log.debug("token counting: tokenizer %s", path)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


@dataclass(frozen=True)
class Chunk:
    """Consecutive segments sent to the LLM together; `text` is their canonical rendering."""

    index: int
    segments: tuple[Segment, ...]
    text: str
    tokens: int


def chunk_segments(
    segments: Iterable[Segment],
    max_tokens: int,
    count: TokenCounter = approx_token_count,
) -> list[Chunk]:
    """Pack `segments`, in order, into chunks whose text counts at most `max_tokens` tokens.

    A segment over the budget is cut into pieces, at sentence ends when possible and else between
    words; each piece is a `Segment` with the original speaker, its words joined by single spaces,
    and times interpolated by word position when both start and end are known (else the first
    piece keeps the start and the last the end). A word that alone exceeds the budget is cut into
    consecutive pieces that fit (between characters), each then counted as a word. Segments with
    empty text are dropped. Raises ValueError when `max_tokens` is below 1.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    pieces: list[Segment] = []
    for segment in segments:
        if segment.text:
            pieces.extend(_fit_segment(segment, max_tokens, count))

    def cost(segment: Segment) -> int:
        return count(segments_to_text([segment]))

    groups = _pack(pieces, segments_to_text, cost, max_tokens, count, separator="\n")
    chunks: list[Chunk] = []
    for group in groups:
        text = segments_to_text(group)
        chunks.append(Chunk(len(chunks), tuple(group), text, count(text)))
    return chunks


def _pack(
    units: Sequence[_T],
    render: Callable[[Sequence[_T]], str],
    cost: Callable[[_T], int],
    max_tokens: int,
    count: TokenCounter,
    *,
    separator: str,
) -> list[list[_T]]:
    """Greedily group `units` in order so each group's rendered text fits `max_tokens`.

    Counting every candidate group would be quadratic in the group size, so a running sum of the
    units' costs (their own counts, plus the separator's) is tried first and the exact count only
    when that sum exceeds the budget. Token counts are nearly additive, but not always (BPE merges
    across a boundary), so each group is checked exactly at the end and re-packed exactly if it
    overflows.
    """
    sep_cost = count(separator)
    groups: list[list[_T]] = []
    current: list[_T] = []
    estimate = 0
    for unit in units:
        if current:
            step = cost(unit) + sep_cost
            if estimate + step <= max_tokens:
                current.append(unit)
                estimate += step
                continue
            exact = count(render([*current, unit]))
            if exact <= max_tokens:
                current.append(unit)
                estimate = exact
                continue
            groups.append(current)
        current = [unit]
        estimate = count(render(current))
    if current:
        groups.append(current)
    checked: list[list[_T]] = []
    for group in groups:
        if len(group) > 1 and count(render(group)) > max_tokens:
            checked.extend(_pack_exact(group, render, max_tokens, count))
        else:
            checked.append(group)
    return checked


def _pack_exact(
    units: Sequence[_T], render: Callable[[Sequence[_T]], str], max_tokens: int, count: TokenCounter
) -> list[list[_T]]:
    """Greedy grouping that counts every candidate group exactly (the slow, sure path)."""
    groups: list[list[_T]] = []
    current: list[_T] = []
    for unit in units:
        if current and count(render([*current, unit])) > max_tokens:
            groups.append(current)
            current = []
        current.append(unit)
    if current:
        groups.append(current)
    return groups


def _fit_segment(segment: Segment, max_tokens: int, count: TokenCounter) -> list[Segment]:
    """Return the segment itself if it fits, else pieces cut at sentence, then word, boundaries."""
    if count(segments_to_text([segment])) <= max_tokens:
        return [segment]
    speaker = segment.speaker

    def render(words: Sequence[str]) -> str:
        return segments_to_text([Segment(" ".join(words), speaker)])

    def render_sentences(sentences: Sequence[list[str]]) -> str:
        return render(_flatten(sentences))

    def cost(words: list[str]) -> int:
        return count(" ".join(words))

    def word_cost(word: str) -> int:
        return count(render([word]))  # the word alone on its line, speaker label included

    words = [piece for word in segment.text.split() for piece in _cut_word(word, max_tokens, word_cost)]
    pieces: list[list[str]] = []
    for sentence in _sentences(words):
        if count(render(sentence)) <= max_tokens:
            pieces.append(sentence)
        else:
            singles = [[word] for word in sentence]
            groups = _pack(singles, render_sentences, cost, max_tokens, count, separator=" ")
            pieces.extend(_flatten(group) for group in groups)
    # Sentences that fit are merged back together as far as the budget allows.
    merged = _pack(pieces, render_sentences, cost, max_tokens, count, separator=" ")
    return _timed_pieces(segment, [_flatten(group) for group in merged])


def _cut_word(word: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """The word itself if it fits `max_tokens`, else consecutive slices of it that each fit."""
    n = count(word)
    if n <= max_tokens:
        return [word]
    step = max(1, len(word) * max_tokens // n)
    while True:
        slices = [word[i : i + step] for i in range(0, len(word), step)]
        if step == 1 or all(count(piece) <= max_tokens for piece in slices):
            return slices
        step = max(1, step * 9 // 10)


def _flatten(groups: Iterable[list[str]]) -> list[str]:
    return [word for group in groups for word in group]


def _sentences(words: Sequence[str]) -> list[list[str]]:
    """Group words into sentences: a word ending in . ? ! … (maybe then quotes) ends one."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for word in words:
        current.append(word)
        if _SENTENCE_END.search(word):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def _timed_pieces(segment: Segment, pieces: Sequence[list[str]]) -> list[Segment]:
    """Make a Segment per piece; interpolate times by word position (an approximation)."""
    start, end = segment.start, segment.end
    total = sum(len(words) for words in pieces)
    result = []
    done = 0
    piece_start: float | None
    piece_end: float | None
    for number, words in enumerate(pieces):
        first, last = number == 0, number == len(pieces) - 1
        if start is not None and end is not None:
            piece_start = start + (end - start) * done / total
            piece_end = start + (end - start) * (done + len(words)) / total
        else:
            piece_start = start if first else None
            piece_end = end if last else None
        result.append(Segment(" ".join(words), segment.speaker, piece_start, piece_end))
        done += len(words)
    return result
