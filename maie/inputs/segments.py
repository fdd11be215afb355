"""What parsing produces: segments, the format names, and the canonical text of segments."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["Format", "FORMATS", "Segment", "TranscriptText", "segments_to_text"]

Format = Literal["text", "speakers", "json", "srt", "vtt"]
FORMATS: tuple[Format, ...] = get_args(Format)


class TranscriptText(str):
    """Transcript text that is never taken as a path, even when it is one line naming a file.

    For text that comes from someone else (an HTTP body, standard input): a plain `str` that names
    an existing file would be read as that file.
    """


@dataclass(frozen=True)
class Segment:
    """One stretch of speech: its text, who spoke it and when (seconds), when known."""

    text: str
    speaker: str | None = None
    start: float | None = None
    end: float | None = None


def segments_to_text(segments: Iterable[Segment]) -> str:
    """Render segments as `Speaker: text` lines, or bare lines for segments without a speaker.

    No timestamps: this is the text LLMs see and results carry. Segments with empty text are left
    out.
    """
    lines = []
    for segment in segments:
        if not segment.text:
            continue
        lines.append(f"{segment.speaker}: {segment.text}" if segment.speaker else segment.text)
    return "\n".join(lines)
