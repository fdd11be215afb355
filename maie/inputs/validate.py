"""Checks on transcript content, each failing with a one-line `InputError` saying what and where."""

from __future__ import annotations

import re

from maie.errors import InputError

__all__ = ["BOM", "fail", "show", "check_size", "utf8_size", "decode", "check_content", "check_times"]

BOM = "\ufeff"

# C0 controls other than tab and line breaks, and DEL: text files rarely hold them, binaries do.
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x1f\x7f]")


def fail(message: str) -> InputError:
    # Messages end up in logs, job results and HTTP bodies: keep every one on a single line.
    return InputError(" ".join(message.split()))


def show(value: str, limit: int = 80) -> str:
    """Quote a user-supplied value for a one-line message, shortened when long."""
    flat = " ".join(value.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def check_size(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise fail(f"{what} is {size} bytes, over the limit of {max_bytes} bytes")


def utf8_size(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise fail(f"transcript holds an invalid character at offset {exc.start}") from None


def decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"{where} is not valid UTF-8: bad byte at offset {exc.start}") from None
    return text.removeprefix(BOM)


def check_content(text: str, where: str) -> str:
    """Refuse empty, blank or binary content; return the text with line ends normalised."""
    if not text:
        raise fail(f"{where} is empty")
    nul = text.find("\0")
    if nul >= 0:
        raise fail(
            f"{where} contains a NUL character at offset {nul}; binary data is not a transcript"
        )
    controls = len(_CONTROL_CHARS.findall(text))
    # A stray control character can come from copy and paste; many mean binary data.
    if controls > max(2, len(text) // 100):
        raise fail(f"{where} looks like binary data ({controls} control characters)")
    if not text.strip():
        raise fail(f"{where} is blank (only whitespace)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_times(start: float | None, end: float | None, at: str) -> None:
    """Refuse negative times and a segment that ends before it starts."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and value < 0:
            raise fail(f"{at} has a negative {name} time ({value:g} s)")
    if start is not None and end is not None and end < start:
        raise fail(f"{at} ends before it starts (start {start:g} s, end {end:g} s)")
