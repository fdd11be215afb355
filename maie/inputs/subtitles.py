"""SRT and WebVTT subtitles: each cue's lines become segments with the cue's times."""

from __future__ import annotations

import re
from collections.abc import Sequence

import srt
import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError
from webvtt.vtt import WebVTTCueBlock

from maie.inputs.prose import clean, label_match, speaker_name
from maie.inputs.segments import Segment
from maie.inputs.validate import check_times, fail, show

__all__ = ["SRT_START", "parse_srt", "parse_vtt"]

# How an SRT file starts: a cue number, then a line of timing.
SRT_START = re.compile(r"^\d+[ \t]*\r?\n[ \t]*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}[ \t]*-->")
_VOICE_TAG = re.compile(r"^\s*<v(?:\.[\w-]+)*\s+([^>]+?)\s*>")
# HTML-like styling (<i>, <font ...>, VTT <c.x>), VTT karaoke times (<00:01.500>), ASS {\an8}.
_MARKUP_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<\d{1,2}:\d{2}[\d:.]*>|\{\\[^{}]*\}")


def parse_srt(text: str, where: str) -> list[Segment]:
    if "-->" not in text:
        raise fail(f"{where}: no SRT cues found")
    try:
        cues = list(srt.parse(text))
    except srt.SRTParseError as exc:
        line = text.count("\n", 0, exc.expected_start) + 1
        cue = text.count("-->", 0, exc.expected_start) + 1
        snippet = exc.unmatched_content.strip().split("\n")[:2]
        raise fail(
            f"{where}: broken SRT cue {cue} near line {line}: {show(' | '.join(snippet), 60)}"
        ) from None
    except ValueError as exc:  # srt.TimestampParseError
        raise fail(f"{where}: broken SRT timing: {exc}") from None
    if not cues:
        raise fail(f"{where}: no SRT cues found")
    segments: list[Segment] = []
    for number, cue in enumerate(cues, start=1):
        start, end = cue.start.total_seconds(), cue.end.total_seconds()
        check_times(start, end, f"{where}: SRT cue {number} (index {cue.index})")
        segments.extend(_cue_segments(cue.content.split("\n"), start, end))
    return segments


def parse_vtt(text: str, where: str) -> list[Segment]:
    try:
        # strict: a cue with broken timing is an error, not silently dropped.
        captions = webvtt.from_string(text, strict=True).captions
    except MalformedFileError:
        raise fail(f"{where}: not a WebVTT file (it must start with 'WEBVTT')") from None
    except (MalformedCaptionError, ValueError) as exc:
        place = _vtt_error_place(text)
        raise fail(f"{where}: broken VTT {place}: {show(str(exc), 100)}") from None
    if not captions:
        raise fail(f"{where}: no VTT cues found")
    segments: list[Segment] = []
    for number, caption in enumerate(captions, start=1):
        start = caption.start_time.in_milliseconds() / 1000
        end = caption.end_time.in_milliseconds() / 1000
        check_times(start, end, f"{where}: VTT cue {number}")
        segments.extend(_cue_segments(caption.lines, start, end))
    return segments


def _cue_segments(lines: Sequence[str], start: float, end: float) -> list[Segment]:
    """Turn the lines of one subtitle cue into segments; a voice tag or label starts a turn."""
    turns: list[tuple[str | None, list[str]]] = []
    for raw in lines:
        voice = _VOICE_TAG.match(raw)
        line = _MARKUP_TAG.sub("", raw).strip()
        if not line and voice is None:
            continue
        speaker: str | None = None
        if voice is not None:
            speaker = speaker_name(voice.group(1))
        elif (label := label_match(line)) is not None:
            speaker, line = label.group("label").strip(), label.group("text").strip()
        if speaker is not None or not turns:
            turns.append((speaker, [line]))
        else:
            turns[-1][1].append(line)
    return [Segment(clean("\n".join(parts)), who, start, end) for who, parts in turns]


def _vtt_error_place(text: str) -> str:
    """Say which cue has timing webvtt rejects, for a message that points at the right line."""
    cue = 0
    for line_number, line in enumerate(text.split("\n"), start=1):
        if "-->" in line:
            cue += 1
            if not WebVTTCueBlock.STRICT_CUE_TIMINGS_PATTERN.match(line):
                return f"cue {cue} at line {line_number}"
    return "cue"
