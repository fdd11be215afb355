"""Which format a transcript is in, and parsing it with that format's parser."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from maie.inputs.prose import looks_like_speakers, parse_speakers, parse_text
from maie.inputs.segments import Format, Segment
from maie.inputs.subtitles import SRT_START, parse_srt, parse_vtt
from maie.inputs.validate import check_content, fail
from maie.inputs.whisper_json import parse_json

__all__ = ["Hint", "parse_as"]

# What to parse: a format, "any" (detect it) or "prose" (detect plain text versus speaker turns).
Hint = Format | Literal["any", "prose"]

_JSON_SCALAR_START = re.compile(r"(?:true|false|null)\b")

_PARSERS: dict[Format, Callable[[str, str], list[Segment]]] = {
    "text": parse_text,
    "speakers": parse_speakers,
    "json": parse_json,
    "srt": parse_srt,
    "vtt": parse_vtt,
}


def parse_as(text: str, hint: Hint, where: str) -> list[Segment]:
    """Check `text` and parse it in the format `hint` names or the one detected."""
    text = check_content(text, where)
    chosen: Format
    if hint == "any":
        chosen = _sniff(text)
    elif hint == "prose":
        chosen = "speakers" if looks_like_speakers(text) else "text"
    else:
        chosen = hint
    segments = _PARSERS[chosen](text, where)
    kept = [segment for segment in segments if segment.text]
    if not kept:
        raise fail(f"{where} has no text: all {len(segments)} {chosen} segments are empty")
    return kept


def _sniff(text: str) -> Format:
    head = text.lstrip()
    if _looks_like_json(head):
        return "json"
    if head.startswith("WEBVTT"):
        return "vtt"
    if SRT_START.match(head):
        return "srt"
    return "speakers" if looks_like_speakers(text) else "text"


def _looks_like_json(head: str) -> bool:
    if head.startswith("{"):
        return True
    if not head.startswith("["):
        return False
    # Transcripts often open with "[Music]" or "[inaudible]": only a JSON value start counts.
    rest = head[1:].lstrip()
    return (
        rest[:1] in ("{", "[", '"', "]", "-")
        or rest[:1].isdigit()
        or bool(_JSON_SCALAR_START.match(rest))
    )
