"""Enhancement: restore punctuation, casing and obvious ASR errors in one chunk, change nothing else.

Knows no Celery: `enhance_chunk_text` takes a backend and a chunk and returns an `EnhancedChunk`.
The output contract is plain text, checked by a faithfulness test: the normalized word sequences of
input and output are compared (word-level edit rate, rapidfuzz) and speaker labels must survive.
An unfaithful reply is retried once at temperature 0; if that fails too the raw chunk is kept and
marked degraded with its edit rate, so a bad model can never rewrite what was said.

With `mode="constrained"` (ENHANCE_MODE) decoding follows a regular expression built from the chunk
(maie.enhance_regex): the model may only write the chunk's words in order, choosing case and
punctuation. The reply is still checked, so a server that ignores the constraint is caught.

A chunk whose prompt and reply budget do not fit the model's context (CHUNK_MAX_TOKENS set above
what the endpoint holds, or a server that counts more tokens than the chunker did) is enhanced in
halves, split between lines, else between words, and put back together in order.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rapidfuzz.distance import Levenshtein

from maie.backends.base import LLMBackend, Message
from maie.chunking import approx_token_count
from maie.enhance_regex import words_regex
from maie.errors import ContextExceeded
from maie.settings import LlmTaskSettings
from maie.tokens import ESTIMATE_MARGIN, TEMPLATE_OVERHEAD, count_text, prompt_tokens

__all__ = [
    "SYSTEM_PROMPT",
    "EnhancedChunk",
    "EnhanceMode",
    "build_messages",
    "normalize_words",
    "speaker_labels",
    "word_edit_rate",
    "enhance_chunk_text",
]

SYSTEM_PROMPT = (
    "You correct speech-recognition transcripts. Restore punctuation and capitalization, and fix "
    "only obvious recognition errors (a wrong word that sounds like the right one). Do not add, "
    "remove, reorder, translate or summarize anything. Keep every line, and keep each speaker label "
    "before its colon exactly as it is. Keep the transcript's language. Reply with the corrected "
    "transcript only, without any comment."
)

log = logging.getLogger(__name__)

# free: the model writes what it likes and the faithfulness check judges it (the default).
# constrained: decoding may only emit the chunk's own words in order (see the module docstring).
EnhanceMode = Literal["free", "constrained"]

_WORD = re.compile(r"[\w']+", re.UNICODE)
_LABEL = re.compile(r"^([^:\n]{1,40}):\s")


@dataclass(frozen=True)
class EnhancedChunk:
    index: int
    text: str
    degraded: bool
    edit_rate: float | None  # None when the chunk could not be enhanced at all
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    # Set when the chunk could not be enhanced at all and its raw text stands in for it.
    failed: bool = False
    error: str | None = None

    @classmethod
    def kept_raw(cls, index: int, text: str, error: str, attempts: int) -> EnhancedChunk:
        """A chunk that could not be enhanced, its raw text standing in (ENHANCE_ON_FAILURE=raw)."""
        # Degraded, no edit rate, no tokens and no LLM time: no reply was ever accepted.
        return cls(index, text, True, None, attempts, 0, 0, 0.0, failed=True, error=error)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnhancedChunk:
        return cls(**data)


def build_messages(chunk_text: str) -> list[Message]:
    # The chunk is the whole user message: nothing else for the model to echo or embellish.
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": chunk_text},
    ]


def normalize_words(text: str) -> list[str]:
    """Lowercased words without punctuation: what enhancement is not allowed to change."""
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


def speaker_labels(text: str) -> list[str]:
    return [m.group(1).strip() for line in text.splitlines() if (m := _LABEL.match(line))]


def word_edit_rate(before: str, after: str) -> float:
    """Word-level Levenshtein distance over the input's word count."""
    a, b = normalize_words(before), normalize_words(after)
    return Levenshtein.distance(a, b) / max(len(a), 1)


def _budget(counter: LLMBackend | None, chunk_text: str, cfg: LlmTaskSettings) -> int:
    # Punctuation adds tokens; 1.5x plus slack is ample, and never more than the configured cap.
    return max(16, min(cfg.max_tokens, int(count_text(counter, chunk_text) * 1.5) + 64))


def reply_budget(
    backend: LLMBackend,
    chunk_text: str,
    cfg: LlmTaskSettings,
    mode: EnhanceMode = "free",
    *,
    exact: bool = True,
) -> int | None:
    """The chunk's reply budget when its prompt plus that budget fit the model's context, else None.
    Counted by the backend when `exact` (a `/tokenize` request per count on a server), else estimated."""
    counter = backend if exact else None
    budget = _budget(counter, chunk_text, cfg)
    room = backend.max_model_len - prompt_tokens(counter, build_messages(chunk_text))
    if budget > room:
        return None
    if mode == "free":
        return budget
    # A constrained reply cannot ramble, but the model may spell a word in short tokens where the
    # tokenizer would use one (the development model took 3-4 per word). Every token holds at least
    # a byte, so the chunk's bytes plus a mark per word bound any reply the pattern allows: that
    # bound replaces LLM_ENHANCE__MAX_TOKENS, whose job (stopping a rambling reply) the pattern
    # does; only the context still limits it.
    bound = len(chunk_text.encode()) + len(chunk_text.split()) + 8
    return min(room, max(budget, bound))


def max_chunk_tokens(context: int, cfg: LlmTaskSettings) -> int:
    """The largest chunk whose prompt (system prompt, chat markup) and reply budget fit `context`,
    in estimated tokens: what CHUNK_MAX_TOKENS is clamped to."""
    fixed = approx_token_count(SYSTEM_PROMPT) * ESTIMATE_MARGIN + TEMPLATE_OVERHEAD + 64
    # chunk * margin (prompt) + chunk * margin * 1.5 (reply) + fixed <= context
    return max(16, int((context - fixed) / (2.5 * ESTIMATE_MARGIN)))


_split_warned = False


def enhance_chunk_text(
    backend: LLMBackend,
    index: int,
    chunk_text: str,
    cfg: LlmTaskSettings,
    max_edit_rate: float,
    mode: EnhanceMode = "free",
) -> EnhancedChunk:
    """Enhance one chunk; the backend's errors (unavailable, rejected) propagate to the caller."""
    global _split_warned
    started = time.monotonic()
    # Estimated first: chunks are cut to fit by the same estimate, so this is the usual case and
    # costs no request to count tokens (two `/tokenize` requests per chunk on a server). Counted
    # exactly when the estimate says it does not fit, or when the server refused what the estimate
    # let through (its margin is measured on English meetings; other languages may count more).
    tried: set[int] = set()
    for exact in (False, True):
        budget = reply_budget(backend, chunk_text, cfg, mode, exact=exact)
        if budget is None or budget in tried:
            continue  # no fit, or the very request the server refused already
        tried.add(budget)
        try:
            return _enhance_whole(backend, index, chunk_text, budget, cfg, max_edit_rate, started, mode)
        except ContextExceeded:
            pass  # the server counted more than we did: halve it like any chunk that does not fit
    halves = _halves(chunk_text)
    if halves is None:
        raise ContextExceeded(
            f"chunk {index} is one word that does not fit the {backend.max_model_len}-token context"
        )
    if not _split_warned:
        _split_warned = True
        log.warning(
            "chunk %d does not fit the enhancement context of %d tokens with its prompt and reply: "
            "enhancing it in parts (lower CHUNK_MAX_TOKENS to at most %d)",
            index,
            backend.max_model_len,
            max_chunk_tokens(backend.max_model_len, cfg),
        )
    (first_text, second_text), joiner = halves
    first = enhance_chunk_text(backend, index, first_text, cfg, max_edit_rate, mode)
    second = enhance_chunk_text(backend, index, second_text, cfg, max_edit_rate, mode)
    degraded = first.degraded or second.degraded
    return EnhancedChunk(
        index,
        # A degraded half stands as raw text; the whole chunk is then marked degraded.
        first.text + joiner + second.text,
        degraded,
        round(max(first.edit_rate or 0.0, second.edit_rate or 0.0), 4),
        max(first.attempts, second.attempts),
        first.prompt_tokens + second.prompt_tokens,
        first.completion_tokens + second.completion_tokens,
        round(time.monotonic() - started, 4),
    )


def _halves(text: str) -> tuple[tuple[str, str], str] | None:
    """The text in two halves and what joins them again: between lines, else between words, else
    (one word, e.g. a line without spaces) between characters; None for a single character."""
    lines = text.split("\n")
    if len(lines) > 1:
        middle = len(lines) // 2
        return ("\n".join(lines[:middle]), "\n".join(lines[middle:])), "\n"
    words = text.split(" ")
    if len(words) > 1:
        middle = len(words) // 2
        return (" ".join(words[:middle]), " ".join(words[middle:])), " "
    if len(text) > 1:
        return (text[: len(text) // 2], text[len(text) // 2 :]), ""
    return None


def _enhance_whole(
    backend: LLMBackend,
    index: int,
    chunk_text: str,
    max_tokens: int,
    cfg: LlmTaskSettings,
    max_edit_rate: float,
    started: float,
    mode: EnhanceMode,
) -> EnhancedChunk:
    messages = build_messages(chunk_text)
    regex = words_regex(chunk_text) if mode == "constrained" else None
    labels = speaker_labels(chunk_text)
    used_prompt = completion_tokens = 0
    rate = 1.0
    # The first try uses the configured temperature; an unfaithful reply gets one retry at 0. When
    # the first try was already at 0, greedy decoding would repeat the same reply: no retry.
    temperatures = (cfg.temperature, 0.0) if cfg.temperature > 0 else (0.0,)
    for attempt, temperature in enumerate(temperatures, start=1):
        reply = backend.chat(
            messages, max_tokens=max_tokens, temperature=temperature, top_p=cfg.top_p, regex=regex
        )
        used_prompt += reply.prompt_tokens or 0
        completion_tokens += reply.completion_tokens or 0
        text = reply.text.strip()
        rate = word_edit_rate(chunk_text, text)
        complete = reply.finish_reason != "length"
        if complete and rate <= max_edit_rate and speaker_labels(text) == labels:
            return EnhancedChunk(
                index,
                text,
                False,
                round(rate, 4),
                attempt,
                used_prompt,
                completion_tokens,
                round(time.monotonic() - started, 4),
            )
    return EnhancedChunk(
        index,
        chunk_text,
        True,
        round(rate, 4),
        len(temperatures),
        used_prompt,
        completion_tokens,
        round(time.monotonic() - started, 4),
    )
