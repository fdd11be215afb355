"""Transcript input: read a file or a string, detect its format and turn it into segments.

Accepted formats: plain text, `Speaker: text` lines, Whisper-style JSON, SRT and WebVTT. Every
problem with the input raises `InputError` with a one-line message saying what is wrong and where,
so nothing is queued for a transcript the pipeline could not use.

`segments_to_text` renders segments as the canonical text shown to LLMs and stored in results.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import srt
import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError
from webvtt.vtt import WebVTTCueBlock

from maie.errors import InputError

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

Format = Literal["text", "speakers", "json", "srt", "vtt"]
FORMATS: tuple[Format, ...] = get_args(Format)

# What to parse: a format, "any" (detect it) or "prose" (detect plain text versus speaker turns).
_Hint = Format | Literal["any", "prose"]
# `.txt` may hold plain text or speaker turns, so it only narrows detection to those two.
_EXTENSIONS: dict[str, _Hint] = {".txt": "prose", ".srt": "srt", ".vtt": "vtt", ".json": "json"}
KNOWN_EXTENSIONS: tuple[str, ...] = tuple(_EXTENSIONS)

_MAX_PATH_CHARS = 4096
_BOM = "\ufeff"

# `Label: text` with a short label that starts with a letter and holds no sentence punctuation.
# The colon must be followed by whitespace or the line end, which rules out `10:30` and `http://`.
_LABEL_LINE = re.compile(
    r"^\s*(?P<label>[^\W\d_][^:.?!…;,\"“”()\[\]{}<>]{0,39}?)\s*:(?:\s+|$)(?P<text>.*)$"
)
_MAX_LABEL_WORDS = 6
_VOICE_TAG = re.compile(r"^\s*<v(?:\.[\w-]+)*\s+([^>]+?)\s*>")
# HTML-like styling (<i>, <font ...>, VTT <c.x>), VTT karaoke times (<00:01.500>), ASS {\an8}.
_MARKUP_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<\d{1,2}:\d{2}[\d:.]*>|\{\\[^{}]*\}")
_SRT_START = re.compile(r"^\d+[ \t]*\r?\n[ \t]*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}[ \t]*-->")
_JSON_SCALAR_START = re.compile(r"(?:true|false|null)\b")
# C0 controls other than tab and line breaks, and DEL: text files rarely hold them, binaries do.
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x1f\x7f]")


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


def load_transcript(
    source: str | os.PathLike[str],
    *,
    max_bytes: int = 5_000_000,
    fmt: Format | None = None,
) -> list[Segment]:
    """Read a transcript from a path or from the transcript text itself and return its segments.

    A `Path` (any PathLike) is always a file. A `str` is a file when it holds no newline, is shorter
    than 4096 characters and names an existing file; a one-line `str` ending in `.txt`, `.srt`,
    `.vtt` or `.json` that names nothing is reported as a missing file rather than read as text.
    The format is `fmt` if given, else the file extension, else detected from the content
    (`.txt` only narrows detection to plain text or speaker turns). Text longer than `max_bytes`
    in UTF-8 is refused too. Raises `InputError` for anything unusable.
    """
    if fmt is not None and fmt not in FORMATS:  # a value from an API body or the command line
        raise _fail(f"unknown transcript format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = _as_path(source)
    if path is None:
        assert isinstance(source, str)
        return parse_transcript(source, max_bytes=max_bytes, fmt=fmt)
    text = _read_file(path, max_bytes)
    hint = fmt or _EXTENSIONS.get(path.suffix.lower(), "any")
    return _parse(text, hint, f"file {_show(str(path))}")


def parse_transcript(
    text: str, *, max_bytes: int = 5_000_000, fmt: Format | None = None
) -> list[Segment]:
    """Parse transcript text already in memory, never taken as a path; see `load_transcript`."""
    if fmt is not None and fmt not in FORMATS:
        raise _fail(f"unknown transcript format {fmt!r}; expected one of {', '.join(FORMATS)}")
    text = text.removeprefix(_BOM)
    _check_size(_utf8_size(text), max_bytes, "transcript")
    return _parse(text, fmt or "any", "transcript")


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


# ---------------------------------------------------------------------------------------------
# Reading


def _fail(message: str) -> InputError:
    # Messages end up in logs, job results and HTTP bodies: keep every one on a single line.
    return InputError(" ".join(message.split()))


def _show(value: str, limit: int = 80) -> str:
    """Quote a user-supplied value for a one-line message, shortened when long."""
    flat = " ".join(value.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _as_path(source: str | os.PathLike[str]) -> Path | None:
    """Return the file `source` names, or None when `source` is the transcript itself."""
    if isinstance(source, TranscriptText):
        return None
    if not isinstance(source, str):
        path = Path(os.fspath(source))
    else:
        if (
            not source.strip()  # Path("") would be the current directory
            or "\n" in source
            or "\r" in source
            or "\0" in source
            or len(source) >= _MAX_PATH_CHARS
        ):
            return None
        path = Path(source)
        try:
            exists = path.exists()
        except (OSError, ValueError):
            exists = False
        if not exists:
            if path.suffix.lower() in _EXTENSIONS:
                raise _fail(f"file not found: {_show(source)}")
            return None
    return path


def _read_file(path: Path, max_bytes: int) -> str:
    shown = _show(str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _fail(f"file not found: {shown}") from None
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read {shown}: {exc.__class__.__name__}") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(f"{shown} is a directory, not a transcript file")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(f"{shown} is not a regular file")
    # Checked before reading so a huge file is never loaded into memory.
    _check_size(info.st_size, max_bytes, f"file {shown}")
    if info.st_size == 0:
        raise _fail(f"file {shown} is empty (0 bytes)")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise _fail(f"cannot read {shown}: {exc.strerror or exc.__class__.__name__}") from None
    _check_size(len(data), max_bytes, f"file {shown}")
    return _decode(data, f"file {shown}")


def _check_size(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise _fail(f"{what} is {size} bytes, over the limit of {max_bytes} bytes")


def _utf8_size(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _fail(f"transcript holds an invalid character at offset {exc.start}") from None


def _decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"{where} is not valid UTF-8: bad byte at offset {exc.start}") from None
    return text.removeprefix(_BOM)


def _check_content(text: str, where: str) -> str:
    """Refuse empty, blank or binary content; return the text with line ends normalised."""
    if not text:
        raise _fail(f"{where} is empty")
    nul = text.find("\0")
    if nul >= 0:
        raise _fail(
            f"{where} contains a NUL character at offset {nul}; binary data is not a transcript"
        )
    controls = len(_CONTROL_CHARS.findall(text))
    # A stray control character can come from copy and paste; many mean binary data.
    if controls > max(2, len(text) // 100):
        raise _fail(f"{where} looks like binary data ({controls} control characters)")
    if not text.strip():
        raise _fail(f"{where} is blank (only whitespace)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------------------------
# Format detection


def _parse(text: str, hint: _Hint, where: str) -> list[Segment]:
    """Check `text` and parse it in the format `hint` names or the one detected."""
    text = _check_content(text, where)
    chosen: Format
    if hint == "any":
        chosen = _sniff(text)
    elif hint == "prose":
        chosen = "speakers" if _looks_like_speakers(text) else "text"
    else:
        chosen = hint
    segments = _PARSERS[chosen](text, where)
    kept = [segment for segment in segments if segment.text]
    if not kept:
        raise _fail(f"{where} has no text: all {len(segments)} {chosen} segments are empty")
    return kept


def _sniff(text: str) -> Format:
    head = text.lstrip()
    if _looks_like_json(head):
        return "json"
    if head.startswith("WEBVTT"):
        return "vtt"
    if _SRT_START.match(head):
        return "srt"
    return "speakers" if _looks_like_speakers(text) else "text"


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


def _label_match(line: str) -> re.Match[str] | None:
    match = _LABEL_LINE.match(line)
    if match is None or len(match.group("label").split()) > _MAX_LABEL_WORDS:
        return None
    return match


def _looks_like_speakers(text: str) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    labelled = sum(1 for line in lines if _label_match(line))
    return labelled * 2 > len(lines)


# ---------------------------------------------------------------------------------------------
# Parsers


def _clean(text: str) -> str:
    """Join a multi-line text into one line; keep the spacing inside each line as it is."""
    return " ".join(part.strip() for part in text.split("\n") if part.strip())


def _parse_text(text: str, where: str) -> list[Segment]:
    return [Segment(line.strip()) for line in text.split("\n") if line.strip()]


def _parse_speakers(text: str, where: str) -> list[Segment]:
    turns: list[tuple[str | None, list[str]]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        match = _label_match(line)
        if match is not None:
            turns.append((match.group("label").strip(), [match.group("text").strip()]))
        elif turns:
            turns[-1][1].append(line.strip())  # a continuation of the previous turn
        else:
            turns.append((None, [line.strip()]))
    return [Segment(" ".join(part for part in parts if part), speaker) for speaker, parts in turns]


def _parse_json(text: str, where: str) -> list[Segment]:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _fail(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise _fail(f"{where} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        if "segments" in data:
            items = data["segments"]
            if not isinstance(items, list):
                raise _fail(f"{where}: 'segments' must be a list, got {_json_type(items)}")
            if items or not isinstance(data.get("text"), str):
                return _json_segments(items, where)
        body = data.get("text")
        if isinstance(body, str):
            if not body.strip():
                raise _fail(f"{where}: 'text' is empty")
            return _parse(body, "prose", f"{where} 'text'")
        if "text" in data:
            raise _fail(f"{where}: 'text' must be a string, got {_json_type(body)}")
        raise _fail(f"{where}: JSON object has neither a 'segments' list nor a 'text' string")
    if isinstance(data, list):
        return _json_segments(data, where)
    raise _fail(f"{where}: JSON must be an object or a list of segments, got {_json_type(data)}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, int | float) else type(value).__name__


def _json_segments(items: Sequence[object], where: str) -> list[Segment]:
    if not items:
        raise _fail(f"{where}: no segments")
    segments = []
    for index, item in enumerate(items):
        at = f"{where}: segments[{index}]"
        if not isinstance(item, dict):
            raise _fail(f"{at} must be an object, got {_json_type(item)}")
        body = item.get("text")
        if not isinstance(body, str):
            problem = "has no 'text'" if "text" not in item else f"'text' is {_json_type(body)}"
            raise _fail(f"{at} {problem}; expected a string")
        speaker = item.get("speaker")
        if speaker is not None and not isinstance(speaker, str):
            raise _fail(f"{at} 'speaker' must be a string, got {_json_type(speaker)}")
        start = _json_time(item, "start", at)
        end = _json_time(item, "end", at)
        _check_times(start, end, at)
        segments.append(Segment(_clean(body), _speaker(speaker), start, end))
    return segments


def _json_time(item: dict[str, Any], key: str, at: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{at} '{key}' must be a number of seconds, got {_json_type(value)}")
    if not math.isfinite(value):
        raise _fail(f"{at} '{key}' is not a finite number")
    return float(value)


def _check_times(start: float | None, end: float | None, at: str) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value < 0:
            raise _fail(f"{at} has a negative {name} time ({value:g} s)")
    if start is not None and end is not None and end < start:
        raise _fail(f"{at} ends before it starts (start {start:g} s, end {end:g} s)")


def _speaker(value: str | None) -> str | None:
    if value is None:
        return None
    return " ".join(value.split()) or None


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
            speaker = _speaker(voice.group(1))
        elif (label := _label_match(line)) is not None:
            speaker, line = label.group("label").strip(), label.group("text").strip()
        if speaker is not None or not turns:
            turns.append((speaker, [line]))
        else:
            turns[-1][1].append(line)
    return [Segment(_clean("\n".join(parts)), who, start, end) for who, parts in turns]


def _parse_srt(text: str, where: str) -> list[Segment]:
    if "-->" not in text:
        raise _fail(f"{where}: no SRT cues found")
    try:
        cues = list(srt.parse(text))
    except srt.SRTParseError as exc:
        line = text.count("\n", 0, exc.expected_start) + 1
        cue = text.count("-->", 0, exc.expected_start) + 1
        snippet = exc.unmatched_content.strip().split("\n")[:2]
        raise _fail(
            f"{where}: broken SRT cue {cue} near line {line}: {_show(' | '.join(snippet), 60)}"
        ) from None
    except ValueError as exc:  # srt.TimestampParseError
        raise _fail(f"{where}: broken SRT timing: {exc}") from None
    if not cues:
        raise _fail(f"{where}: no SRT cues found")
    segments: list[Segment] = []
    for number, cue in enumerate(cues, start=1):
        start, end = cue.start.total_seconds(), cue.end.total_seconds()
        _check_times(start, end, f"{where}: SRT cue {number} (index {cue.index})")
        segments.extend(_cue_segments(cue.content.split("\n"), start, end))
    return segments


def _parse_vtt(text: str, where: str) -> list[Segment]:
    try:
        # strict: a cue with broken timing is an error, not silently dropped.
        captions = webvtt.from_string(text, strict=True).captions
    except MalformedFileError:
        raise _fail(f"{where}: not a WebVTT file (it must start with 'WEBVTT')") from None
    except (MalformedCaptionError, ValueError) as exc:
        place = _vtt_error_place(text)
        raise _fail(f"{where}: broken VTT {place}: {_show(str(exc), 100)}") from None
    if not captions:
        raise _fail(f"{where}: no VTT cues found")
    segments: list[Segment] = []
    for number, caption in enumerate(captions, start=1):
        start = caption.start_time.in_milliseconds() / 1000
        end = caption.end_time.in_milliseconds() / 1000
        _check_times(start, end, f"{where}: VTT cue {number}")
        segments.extend(_cue_segments(caption.lines, start, end))
    return segments


def _vtt_error_place(text: str) -> str:
    """Say which cue has timing webvtt rejects, for a message that points at the right line."""
    cue = 0
    for line_number, line in enumerate(text.split("\n"), start=1):
        if "-->" in line:
            cue += 1
            if not WebVTTCueBlock.STRICT_CUE_TIMINGS_PATTERN.match(line):
                return f"cue {cue} at line {line_number}"
    return "cue"


_PARSERS = {
    "text": _parse_text,
    "speakers": _parse_speakers,
    "json": _parse_json,
    "srt": _parse_srt,
    "vtt": _parse_vtt,
}
