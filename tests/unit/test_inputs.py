"""Transcript loading: every format from a string and from a file, detection, and bad input."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maie.errors import InputError
from maie.inputs import Format, Segment, load_transcript, parse_transcript, segments_to_text

DEV_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "summary_dev.jsonl"

SPEAKERS = "Alice: Good morning everyone.\nBob: Morning. Shall we start?\nAlice: Yes, let's."
SPEAKER_SEGMENTS = [
    Segment("Good morning everyone.", "Alice"),
    Segment("Morning. Shall we start?", "Bob"),
    Segment("Yes, let's.", "Alice"),
]
PLAIN = "The meeting opened at nine.\nBudget was the first item."
JSON_DOC = json.dumps(
    {
        "text": "ignored when segments are present",
        "segments": [
            {"start": 0.0, "end": 2.5, "text": " Hello there.", "speaker": "SPEAKER_00"},
            {"start": 2.5, "end": 4, "text": " Hi."},
        ],
    }
)
SRT_DOC = (
    "1\n00:00:01,250 --> 00:00:03,000\nAlice: Hello there.\n\n"
    "2\n00:00:03,500 --> 00:00:05,000\n<i>It is a\nlong line.</i>\n"
)
VTT_DOC = (
    "WEBVTT\n\n"
    "00:00:01.250 --> 00:00:03.000\n<v Alice>Hello there.</v>\n\n"
    "intro-2\n00:01:03.500 --> 00:01:05.000 align:start\n<v.loud Bob Smith>Hi <b>all</b>.</v>\n"
)

CASES: dict[Format, tuple[str, str, list[Segment]]] = {
    "text": (
        PLAIN,
        ".txt",
        [Segment("The meeting opened at nine."), Segment("Budget was the first item.")],
    ),
    "speakers": (SPEAKERS, ".txt", SPEAKER_SEGMENTS),
    "json": (
        JSON_DOC,
        ".json",
        [Segment("Hello there.", "SPEAKER_00", 0.0, 2.5), Segment("Hi.", None, 2.5, 4.0)],
    ),
    "srt": (
        SRT_DOC,
        ".srt",
        [
            Segment("Hello there.", "Alice", 1.25, 3.0),
            Segment("It is a long line.", None, 3.5, 5.0),
        ],
    ),
    "vtt": (
        VTT_DOC,
        ".vtt",
        [Segment("Hello there.", "Alice", 1.25, 3.0), Segment("Hi all.", "Bob Smith", 63.5, 65.0)],
    ),
}


@pytest.mark.parametrize("fmt", list(CASES))
def test_each_format_from_a_string(fmt: Format) -> None:
    text, _, expected = CASES[fmt]
    assert load_transcript(text) == expected  # detected from the content
    assert load_transcript(text, fmt=fmt) == expected
    assert parse_transcript(text) == expected


@pytest.mark.parametrize("fmt", list(CASES))
def test_each_format_from_a_file(fmt: Format, tmp_path: Path) -> None:
    text, ext, expected = CASES[fmt]
    by_ext = tmp_path / f"transcript{ext}"
    by_ext.write_text(text, encoding="utf-8")
    sniffed = tmp_path / "transcript.data"
    sniffed.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())  # BOM, CRLF
    assert load_transcript(by_ext) == expected
    assert load_transcript(str(by_ext)) == expected
    assert load_transcript(sniffed) == expected
    assert load_transcript(sniffed, fmt=fmt) == expected


def test_explicit_format_wins_over_extension_and_content(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text(SPEAKERS, encoding="utf-8")
    assert load_transcript(path, fmt="speakers") == SPEAKER_SEGMENTS
    assert load_transcript(SPEAKERS, fmt="text") == [Segment(line) for line in SPEAKERS.split("\n")]


def test_speaker_turns_take_continuation_lines() -> None:
    text = "Alice: First line\nstill Alice here\n\nBob: Reply\nSPEAKER_01: Third"
    assert load_transcript(text) == [
        Segment("First line still Alice here", "Alice"),
        Segment("Reply", "Bob"),
        Segment("Third", "SPEAKER_01"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "We met at 10:30 and left at 11:45.\nSee https://example.com for notes.\nThat is all.",
        "The reason was simple, really: nobody came.\nIt rained.\nWe left.",
        "Note: this is one line of prose.\nThen another.\nAnd a third without a colon.",
        "A very long label that is certainly not a speaker name at all: text\nplain",
    ],
)
def test_prose_with_colons_is_not_speaker_turns(text: str) -> None:
    assert all(segment.speaker is None for segment in load_transcript(text))


def test_dev_transcripts_are_speaker_turns_and_round_trip() -> None:
    if not DEV_DATA.exists():
        pytest.skip(f"{DEV_DATA} is absent")
    rows = [json.loads(line) for line in DEV_DATA.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        transcript: str = row["transcript"]
        segments = load_transcript(transcript)
        assert all(segment.speaker for segment in segments), row["id"]
        assert segments_to_text(segments) == transcript.strip(), row["id"]


def test_vtt_voice_tags_and_cue_markup() -> None:
    doc = (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.000\n<v Alice>Hello</v>\n<v Bob>Hi <00:00:01.500>there</v>\n"
        "and more\n\n"
        "00:00:03.000 --> 00:00:04.000\n<c.yellow>Plain</c> text\n"
    )
    assert load_transcript(doc) == [
        Segment("Hello", "Alice", 1.0, 2.0),
        Segment("Hi there and more", "Bob", 1.0, 2.0),
        Segment("Plain text", None, 3.0, 4.0),
    ]


def test_srt_voice_tags_and_labels() -> None:
    doc = (
        "1\n00:00:00,000 --> 00:00:01,000\n<v Người nói 1>Xin chào.</v>\n\n"
        "2\n00:00:01,000 --> 00:00:02,000\n{\\an8}Bob: <b>Yes</b>\n"
    )
    assert load_transcript(doc) == [
        Segment("Xin chào.", "Người nói 1", 0.0, 1.0),
        Segment("Yes", "Bob", 1.0, 2.0),
    ]


def test_json_bare_list_text_only_and_overlaps() -> None:
    overlapping = [
        {"start": 5, "end": 9, "text": "Later first", "speaker": "A"},
        {"start": 2, "end": 6, "text": "Overlap", "speaker": "B"},
        {"text": "No times"},
    ]
    assert load_transcript(json.dumps(overlapping)) == [
        Segment("Later first", "A", 5.0, 9.0),
        Segment("Overlap", "B", 2.0, 6.0),
        Segment("No times"),
    ]
    assert load_transcript('{"text": "Whisper only gives text."}') == [
        Segment("Whisper only gives text.")
    ]
    assert load_transcript('{"text": "A: hi\\nB: yo", "segments": []}') == [
        Segment("hi", "A"),
        Segment("yo", "B"),
    ]


def test_bracketed_text_is_not_json() -> None:
    assert load_transcript("[Music] Welcome back.") == [Segment("[Music] Welcome back.")]


def test_one_line_string_is_text_unless_it_names_a_file(tmp_path: Path) -> None:
    assert load_transcript("no such file here") == [Segment("no such file here")]
    path = tmp_path / "plain"
    path.write_text(PLAIN, encoding="utf-8")
    assert load_transcript(str(path)) == CASES["text"][2]


VIETNAMESE = [
    "Xin chào các bạn. Hôm nay chúng ta họp về ngân sách quý ba.\nMọi người đã đọc báo cáo chưa?",
    "Người điều hành: Chào mừng mọi người đến cuộc họp.\n"
    "Chị Lan: Cảm ơn anh. Tôi có một câu hỏi về tiến độ dự án.\n"
    "Người điều hành: Vâng, chị cứ hỏi.",
    "Đây là bản ghi không có dấu câu nào cả chúng tôi nói liên tục về kế hoạch năm tới",
]


@pytest.mark.parametrize("form", ["NFC", "NFD"])
@pytest.mark.parametrize("text", VIETNAMESE)
def test_vietnamese_round_trips_byte_identical(text: str, form: str, tmp_path: Path) -> None:
    original = unicodedata.normalize(form, text)  # type: ignore[arg-type]
    assert segments_to_text(load_transcript(original)).encode() == original.encode()
    path = tmp_path / "vi.txt"
    path.write_bytes(original.encode("utf-8"))
    assert segments_to_text(load_transcript(path)).encode() == original.encode()


def test_segments_to_text_has_no_timestamps() -> None:
    segments = [Segment("a", "X", 1.0, 2.0), Segment("b"), Segment("c"), Segment("", "Y")]
    assert segments_to_text(segments) == "X: a\nb\nc"


def test_size_is_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"word " * 200)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InputError, match=r"1000 bytes, over the limit of 999 bytes"):
        load_transcript(path, max_bytes=999)


Source = Callable[[Path], "str | Path"]


def _file(data: bytes, name: str = "t.txt") -> Source:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return make


def _text(text: str) -> Source:
    return lambda tmp: text


def _json(value: object) -> Source:
    return _text(json.dumps(value))


BAD: list[tuple[str, Source, str]] = [
    ("empty string", _text(""), "empty"),
    ("whitespace", _text(" \n\t \n"), "blank"),
    ("NUL bytes", _text("hello\0world"), "NUL character at offset 5"),
    ("NUL in file", _file(b"ab\0cd"), "NUL character at offset 2"),
    ("binary", _file(bytes(range(1, 32)) * 4, "blob.bin"), "binary"),
    ("invalid UTF-8", _file("Xin chào".encode() + b"\xff\xfe tail"), "byte at offset 9"),
    ("zero-byte file", _file(b""), "empty (0 bytes)"),
    ("over max_bytes", _file(b"x" * 6_000_001), "6000001 bytes, over the limit of 5000000"),
    ("string over max_bytes", _text("ệ" * 2_000_000), "6000000 bytes, over the limit"),
    ("directory", lambda tmp: tmp, "is a directory, not a transcript file"),
    ("directory as str", lambda tmp: str(tmp), "is a directory"),
    ("missing str", lambda tmp: str(tmp / "gone.srt"), "file not found"),
    ("missing Path", lambda tmp: tmp / "gone", "file not found"),
    ("JSON syntax", _text('{"segments": [\n  {"text": "a",}\n]}'), "line 2, column 16"),
    ("JSON scalar in list", _text("[1, 2]"), "segments[0] must be an object, got number"),
    ("JSON segments not list", _json({"segments": {"text": "a"}}), "'segments' must be a list"),
    ("JSON no text", _json([{"start": 0, "end": 1}]), "segments[0] has no 'text'"),
    ("JSON text not str", _json([{"text": "a"}, {"text": ["b"]}]), "segments[1] 'text' is list"),
    ("JSON start not number", _json([{"text": "a", "start": "0:01"}]), "'start' must be a number"),
    ("JSON bool time", _json([{"text": "a", "end": True}]), "'end' must be a number"),
    ("JSON NaN time", _text('[{"text": "a", "start": NaN}]'), "NaN is not allowed"),
    ("JSON object shape", _json({"words": []}), "neither a 'segments' list nor a 'text'"),
    ("JSON string", _file(b'"just a string"', "s.json"), "got string"),
    ("JSON speaker not str", _json([{"text": "a", "speaker": 3}]), "'speaker' must be a string"),
    ("JSON no segments", _json({"segments": []}), "no segments"),
    ("JSON all empty", _json([{"text": " "}, {"text": ""}]), "all 2 json segments are empty"),
    ("negative time", _json([{"text": "a", "start": -1.5, "end": 2}]), "negative start"),
    (
        "reversed times",
        _json([{"text": "a"}, {"text": "b", "start": 5, "end": 4}]),
        "segments[1] ends before",
    ),
    (
        "broken SRT timing",
        _text("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:0x,000 --> 00:00:04,000\nno\n"),
        "broken SRT cue 2 near line 5",
    ),
    (
        "SRT reversed cue",
        _file(b"1\n00:00:05,000 --> 00:00:04,000\nback\n", "r.srt"),
        "SRT cue 1 (index 1) ends before it starts",
    ),
    ("whitespace SRT file", _file(b"\n\n\n  \n", "empty.srt"), "blank"),
    ("SRT with no cues", _file(b"just words, no cues\n", "bad.srt"), "no SRT cues found"),
    ("SRT cue without timing", _file(b"1\nhello\n", "c.srt"), "no SRT cues found"),
    (
        "broken VTT timing",
        _text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nok\n\n00:00:03.000 --> 00:0:04.0\nno\n"),
        "broken VTT cue 2 at line 6",
    ),
    ("VTT with no cues", _text("WEBVTT\n\nNOTE nothing here\n"), "no VTT cues found"),
    ("VTT without header", _file(b"00:00:01.000 --> 00:00:02.000\nhi\n", "h.vtt"), "WEBVTT"),
    (
        "VTT reversed",
        _text("WEBVTT\n\n00:00:03.000 --> 00:00:01.000\nx\n"),
        "VTT cue 1 ends before",
    ),
    ("cue text all empty", _text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<b></b>\n"), "no text"),
]


@pytest.mark.parametrize(("make", "expected"), [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_bad_input_raises_one_line_input_error(make: Source, expected: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_transcript(make(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert len(message.splitlines()) == 1
    assert expected in message


def test_unknown_format_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown transcript format"):
        load_transcript("hello", fmt="docx")  # type: ignore[arg-type]
