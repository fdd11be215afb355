"""Enhancement: restore punctuation, casing and obvious ASR errors in one chunk, change nothing else.

Knows no Celery: `enhance_chunk_text` takes a backend and a chunk and returns an `EnhancedChunk`.
The output contract is plain text, checked by a faithfulness test: the normalized word sequences of
input and output are compared (word-level edit rate, rapidfuzz) and speaker labels must survive.
An unfaithful reply is retried once at temperature 0; if that fails too the raw chunk is kept and
marked degraded with its edit rate, so a bad model can never rewrite what was said.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

from maie.backends.base import LLMBackend, Message
from maie.settings import LlmTaskSettings

__all__ = [
    "SYSTEM_PROMPT",
    "EnhancedChunk",
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

_WORD = re.compile(r"[\w']+", re.UNICODE)
_LABEL = re.compile(r"^([^:\n]{1,40}):\s")


@dataclass(frozen=True)
class EnhancedChunk:
    index: int
    text: str
    degraded: bool
    edit_rate: float
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    # Set when the chunk could not be enhanced at all and its raw text stands in for it.
    failed: bool = False
    error: str | None = None

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


def _budget(backend: LLMBackend, chunk_text: str, cfg: LlmTaskSettings) -> int:
    tokens = backend.count_tokens(chunk_text)
    if tokens is None:
        from maie.chunking import approx_token_count

        tokens = approx_token_count(chunk_text)
    # Punctuation adds tokens; 1.5x plus slack is ample, and never more than the configured cap.
    return max(16, min(cfg.max_tokens, int(tokens * 1.5) + 64))


def enhance_chunk_text(
    backend: LLMBackend,
    index: int,
    chunk_text: str,
    cfg: LlmTaskSettings,
    max_edit_rate: float,
) -> EnhancedChunk:
    """Enhance one chunk; the backend's errors (unavailable, rejected) propagate to the caller."""
    started = time.monotonic()
    messages = build_messages(chunk_text)
    max_tokens = _budget(backend, chunk_text, cfg)
    labels = speaker_labels(chunk_text)
    prompt_tokens = completion_tokens = 0
    rate = 1.0
    # The first try uses the configured temperature; an unfaithful reply gets one retry at 0. When
    # the first try was already at 0, greedy decoding would repeat the same reply: no retry.
    temperatures = (cfg.temperature, 0.0) if cfg.temperature > 0 else (0.0,)
    for attempt, temperature in enumerate(temperatures, start=1):
        reply = backend.chat(messages, max_tokens=max_tokens, temperature=temperature, top_p=cfg.top_p)
        prompt_tokens += reply.prompt_tokens or 0
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
                prompt_tokens,
                completion_tokens,
                round(time.monotonic() - started, 4),
            )
    return EnhancedChunk(
        index,
        chunk_text,
        True,
        round(rate, 4),
        len(temperatures),
        prompt_tokens,
        completion_tokens,
        round(time.monotonic() - started, 4),
    )
