"""The entry points: a transcript from a path or from text, checked and turned into segments."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from maie.inputs.detect import Hint, parse_as
from maie.inputs.segments import FORMATS, Format, Segment, TranscriptText
from maie.inputs.validate import BOM, check_size, decode, fail, show, utf8_size

__all__ = ["KNOWN_EXTENSIONS", "load_transcript", "parse_transcript"]

# `.txt` may hold plain text or speaker turns, so it only narrows detection to those two.
_EXTENSIONS: dict[str, Hint] = {".txt": "prose", ".srt": "srt", ".vtt": "vtt", ".json": "json"}
KNOWN_EXTENSIONS: tuple[str, ...] = tuple(_EXTENSIONS)

_MAX_PATH_CHARS = 4096


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
        raise fail(f"unknown transcript format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = _as_path(source)
    if path is None:
        assert isinstance(source, str)
        return parse_transcript(source, max_bytes=max_bytes, fmt=fmt)
    text = _read_file(path, max_bytes)
    hint = fmt or _EXTENSIONS.get(path.suffix.lower(), "any")
    return parse_as(text, hint, f"file {show(str(path))}")


def parse_transcript(
    text: str, *, max_bytes: int = 5_000_000, fmt: Format | None = None
) -> list[Segment]:
    """Parse transcript text already in memory, never taken as a path; see `load_transcript`."""
    if fmt is not None and fmt not in FORMATS:
        raise fail(f"unknown transcript format {fmt!r}; expected one of {', '.join(FORMATS)}")
    text = text.removeprefix(BOM)
    check_size(utf8_size(text), max_bytes, "transcript")
    return parse_as(text, fmt or "any", "transcript")


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
                raise fail(f"file not found: {show(source)}")
            return None
    return path


def _read_file(path: Path, max_bytes: int) -> str:
    shown = show(str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise fail(f"file not found: {shown}") from None
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {shown}: {exc.__class__.__name__}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail(f"{shown} is a directory, not a transcript file")
    if not stat.S_ISREG(info.st_mode):
        raise fail(f"{shown} is not a regular file")
    # Checked before reading so a huge file is never loaded into memory.
    check_size(info.st_size, max_bytes, f"file {shown}")
    if info.st_size == 0:
        raise fail(f"file {shown} is empty (0 bytes)")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise fail(f"cannot read {shown}: {exc.strerror or exc.__class__.__name__}") from None
    check_size(len(data), max_bytes, f"file {shown}")
    return decode(data, f"file {shown}")
