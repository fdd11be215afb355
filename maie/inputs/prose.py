"""Plain text and `Speaker: text` lines, and the speaker labels subtitles reuse."""

from __future__ import annotations

import re

from maie.inputs.segments import Segment

__all__ = ["label_match", "looks_like_speakers", "clean", "speaker_name", "parse_text", "parse_speakers"]

# `Label: text` with a short label that starts with a letter and holds no sentence punctuation.
# The colon must be followed by whitespace or the line end, which rules out `10:30` and `http://`.
_LABEL_LINE = re.compile(
    r"^\s*(?P<label>[^\W\d_][^:.?!…;,\"“”()\[\]{}<>]{0,39}?)\s*:(?:\s+|$)(?P<text>.*)$"
)
_MAX_LABEL_WORDS = 6


def label_match(line: str) -> re.Match[str] | None:
    """The `Label: text` match of a line, or None when the line has no speaker label."""
    match = _LABEL_LINE.match(line)
    if match is None or len(match.group("label").split()) > _MAX_LABEL_WORDS:
        return None
    return match


def looks_like_speakers(text: str) -> bool:
    """Whether most non-blank lines start with a speaker label."""
    lines = [line for line in text.split("\n") if line.strip()]
    labelled = sum(1 for line in lines if label_match(line))
    return labelled * 2 > len(lines)


def clean(text: str) -> str:
    """Join a multi-line text into one line; keep the spacing inside each line as it is."""
    return " ".join(part.strip() for part in text.split("\n") if part.strip())


def speaker_name(value: str | None) -> str | None:
    """A speaker name with its white space folded; None when there is none."""
    if value is None:
        return None
    return " ".join(value.split()) or None


def parse_text(text: str, where: str) -> list[Segment]:
    return [Segment(line.strip()) for line in text.split("\n") if line.strip()]


def parse_speakers(text: str, where: str) -> list[Segment]:
    turns: list[tuple[str | None, list[str]]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        match = label_match(line)
        if match is not None:
            turns.append((match.group("label").strip(), [match.group("text").strip()]))
        elif turns:
            turns[-1][1].append(line.strip())  # a continuation of the previous turn
        else:
            turns.append((None, [line.strip()]))
    return [Segment(" ".join(part for part in parts if part), speaker) for speaker, parts in turns]
