"""The regular expression of constrained enhancement (`ENHANCE_MODE=constrained`).

Built from one chunk, it matches exactly the texts that keep the chunk's words in order: each word
as it was, except that its first letter may change case and one of `,` `.` `?` `!` may follow it.
Speaker labels (`Name: ` at the start of a line) and line breaks are kept literally, words within a
line are joined by one space. Decoding under it cannot drop, add or reorder a word, so the
faithfulness check passes by construction and a reply cannot ramble on to `max_tokens`.

Only the syntax that Python's `re`, xgrammar and llguidance read alike is used: literal characters,
backslash escapes of the metacharacters alone (xgrammar warns about any other escape), character
classes and `?`. Python's `re.fullmatch` on the pattern is the reference for what it accepts.
"""

from __future__ import annotations

import re

__all__ = ["PUNCTUATION", "words_regex"]

# What may follow a word: the marks MAIE's evaluation scores, and nothing else.
PUNCTUATION = ",.?!"
_OPTIONAL_MARK = "[,.?!]?"
# The speaker label of enhance.speaker_labels: up to 40 characters without a colon, then ": ".
_LABEL = re.compile(r"^([^:\n]{1,40}):\s")
_META = frozenset("\\.^$|?*+()[]{}")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _META else _ESCAPES.get(c, c) for c in text)


def _word(token: str) -> str | None:
    """The pattern of one whitespace-separated token: the word with its first letter in either case
    and an optional mark after it; None for a token of marks alone (the model may put them back
    after the word before it)."""
    core = token.rstrip(PUNCTUATION)
    if not core:
        return None
    # The first letter, after any opening quote or bracket, is the one a sentence start capitalises.
    at = next((i for i, c in enumerate(core) if c.isalnum()), 0)
    first = core[at]
    lower, upper = first.lower(), first.upper()
    if lower != upper and len(lower) == 1 and len(upper) == 1:
        letter = f"[{_escape(upper)}{_escape(lower)}]"
    else:
        letter = _escape(first)  # no case, or one that changes length (ß -> SS): as it is
    return _escape(core[:at]) + letter + _escape(core[at + 1 :]) + _OPTIONAL_MARK


def _line(line: str) -> str:
    label = _LABEL.match(line)
    prefix = _escape(label.group(0)) if label else ""
    body = line[label.end() :] if label else line
    words = [p for p in (_word(t) for t in body.split()) if p is not None]
    return prefix + " ".join(words)


def words_regex(text: str) -> str:
    """The pattern of every faithful enhancement of `text` (see the module docstring)."""
    return "\\n".join(_line(line) for line in text.split("\n"))
