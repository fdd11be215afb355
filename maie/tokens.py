"""Token counts planned against a model's context: exact where the backend can count, else an
estimate with a stated safety margin.

`approx_token_count` (max(bytes/4, words*4/3)) came out at 0.89-1.03 of a real BPE tokenizer's count
on meeting transcripts, and a tokenizer may give as few as 3.5 characters per token: packing prompts
right up to the limit with the bare estimate overflows. So an estimate is scaled by ESTIMATE_MARGIN
(bytes/4 * 1.25 = one token per 3.2 bytes) before anything is planned against a context limit.
"""

from __future__ import annotations

import math

from maie.backends.base import LLMBackend, Message
from maie.chunking import approx_token_count

__all__ = ["ESTIMATE_MARGIN", "TEMPLATE_OVERHEAD", "estimate", "count_text", "prompt_tokens"]

ESTIMATE_MARGIN = 1.25
# Tokens kept free for the chat template's own markup around the messages.
TEMPLATE_OVERHEAD = 32


def estimate(text: str) -> int:
    """Tokens of `text` estimated with the safety margin: never fewer than a tokenizer counts."""
    return math.ceil(approx_token_count(text) * ESTIMATE_MARGIN)


def count_text(backend: LLMBackend | None, text: str) -> int:
    """Tokens of `text`: the backend's exact count, else (or without a backend) the estimate."""
    exact = backend.count_tokens(text) if backend is not None else None
    return exact if exact is not None else estimate(text)


def prompt_tokens(backend: LLMBackend | None, messages: list[Message]) -> int:
    """Tokens of a chat prompt: its messages' text plus the chat template's markup (estimated
    when `backend` is None)."""
    return count_text(backend, "\n".join(m["content"] for m in messages)) + TEMPLATE_OVERHEAD
