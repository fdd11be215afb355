"""The fake's text rules: its word and token counts, the deterministic "enhancement" and its faults.

Tokens are whitespace-separated words everywhere (``usage``, ``max_tokens``) so tests can predict
them; only the context check counts ``ceil(characters / 3.5)`` of a ChatML-rendered prompt, 3.5
being the fewest characters per token measured with a real tokenizer on meeting transcripts (a
worst case for clients' estimates).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

# The fewest characters per token a real (Qwen-style BPE) tokenizer gave on meeting transcripts.
CHARS_PER_TOKEN = 3.5
# Words that replace the real ones in a rewrite, and pad replies under `ignore_eos`.
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")

_WORD = re.compile(r"\S+")
_SPEAKER = re.compile(r"([^:\r\n]{1,40}): (.*)", re.S)


def count_words(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


def count_tokens(text: str) -> int:
    """The fake's *context* count: ceil(characters / 3.5), a worst case for clients' estimates."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def chat_prompt(messages: Sequence[Any]) -> str:
    """Messages rendered the way a ChatML chat template does, generation prompt included."""
    parts = [
        f"<|im_start|>{m.get('role', 'user')}\n{content_text(m.get('content'))}<|im_end|>\n"
        for m in messages
        if isinstance(m, dict)
    ]
    return "".join(parts) + "<|im_start|>assistant\n"


def notes(prompt: str) -> str:
    """ "- " plus the first twelve words between <transcript> and </transcript>."""
    inner = prompt.split("<transcript>", 1)[1].split("</transcript>", 1)[0]
    return "- " + " ".join(inner.split()[:12])


def truncate_words(text: str, limit: int) -> str:
    """Keep the first `limit` words, with the original whitespace between them."""
    for index, match in enumerate(_WORD.finditer(text)):
        if index == max(limit, 0):
            return text[: match.start()].rstrip()
    return text


def _polish(text: str) -> str:
    """Capitalise the first letter of the first word and end the sentence with a full stop."""
    core = text.rstrip()
    if not core:
        return text
    trail = text[len(core) :]
    start = len(core) - len(core.lstrip())
    for pos in range(start, len(core)):
        char = core[pos]
        if char.isspace():
            break  # the first word has no letter: leave the case alone
        if char.isalpha():
            core = core[:pos] + char.upper() + core[pos + 1 :]
            break
    if core[-1] not in ".?!":
        core += "."
    return core + trail


def _split_label(line: str) -> tuple[str, str]:
    """Split a `Speaker: text` line into its label prefix (kept verbatim) and its text."""
    match = _SPEAKER.fullmatch(line)
    if match is None:
        return "", line
    return match.group(1) + ": ", match.group(2)


def enhance(text: str) -> str:
    """The deterministic "enhancement": punctuation and capitals only, words and labels kept."""
    lines = []
    for line in text.split("\n"):
        if line.strip():
            label, body = _split_label(line)
            line = label + _polish(body)
        lines.append(line)
    return "\n".join(lines)


def _swap_words(body: str) -> str:
    counter = itertools.count()

    def swap(match: re.Match[str]) -> str:
        index = next(counter)
        return match.group(0) if index % 4 == 3 else FILLER[index % len(FILLER)]

    return _WORD.sub(swap, body)


def rewrite(text: str) -> str:
    """Replace three words out of four (labels kept) so a faithfulness check must fail."""
    lines = []
    for line in text.split("\n"):
        label, body = _split_label(line)
        lines.append(label + _swap_words(body))
    return "\n".join(lines)


def snippet(text: str) -> str:
    """First 6 words of the last non-empty line: lets tests see that the input was read."""
    for line in reversed(text.split("\n")):
        if line.strip():
            return " ".join(line.split()[:6])
    return ""


def content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""
