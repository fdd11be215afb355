"""Transcript input: read a file or a string, detect its format and turn it into segments.

Accepted formats: plain text, `Speaker: text` lines, Whisper-style JSON, SRT and WebVTT. Every
problem with the input raises `InputError` with a one-line message saying what is wrong and where,
so nothing is queued for a transcript the pipeline could not use.

`segments_to_text` renders segments as the canonical text shown to LLMs and stored in results.

    load.py          load_transcript, parse_transcript: from a path or text, reading files
    detect.py        which format a transcript is in, and the parser for each
    prose.py         plain text and `Speaker: text` lines
    whisper_json.py  Whisper-style JSON
    subtitles.py     SRT and WebVTT
    validate.py      size, encoding, binary and timing checks; one-line messages
    segments.py      Segment, the format names, segments_to_text
"""

from __future__ import annotations

from maie.inputs.load import KNOWN_EXTENSIONS, load_transcript, parse_transcript
from maie.inputs.segments import FORMATS, Format, Segment, TranscriptText, segments_to_text

__all__ = [
    "Segment",
    "TranscriptText",
    "Format",
    "FORMATS",
    "KNOWN_EXTENSIONS",
    "load_transcript",
    "parse_transcript",
    "segments_to_text",
]
