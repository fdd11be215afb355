"""The previous MAIE's contract onto MAIE's jobs: features, template ids, names, serving checks."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from maie.api.compat import parse_features, resolve_template_id
from maie.api.jobs import _safe_name
from maie.api.server import check_serving
from maie.errors import ConfigError
from maie.settings import load_settings


@pytest.mark.parametrize(
    ("values", "outputs", "features"),
    [
        (None, ["clean_transcript", "summary"], ["enhance", "summary"]),
        ([], ["clean_transcript", "summary"], ["enhance", "summary"]),
        (["summary"], ["summary"], ["summary"]),
        (["raw_transcript"], ["raw_transcript"], []),
        (["enhancement_metrics"], ["enhancement_metrics"], ["enhance"]),
        ("clean_transcript,summary", ["clean_transcript", "summary"], ["enhance", "summary"]),
        (['["summary", "raw_transcript"]'], ["summary", "raw_transcript"], ["summary"]),
        (["summary", "summary", "clean_transcript"], ["summary", "clean_transcript"], ["summary", "enhance"]),
        (["enhance", "translate"], ["enhance", "translate"], ["enhance", "translate"]),
        ([","], ["clean_transcript", "summary"], ["enhance", "summary"]),
    ],
)
def test_parse_features(values: object, outputs: list[str], features: list[str]) -> None:
    assert parse_features(values, ("clean_transcript", "summary")) == (outputs, features)  # type: ignore[arg-type]


def test_previous_template_ids_map_to_maie_bundles_unless_a_bundle_has_that_id(tmp_path: object) -> None:
    assert resolve_template_id("meeting_notes_v1", None) == "meeting_notes"
    assert resolve_template_id("meeting_notes_v2", None) == "meeting_notes_vi"
    assert resolve_template_id("interview_transcript_v1", None) == "interview"
    assert resolve_template_id("meeting_notes", None) == "meeting_notes"
    assert resolve_template_id("", None) is None and resolve_template_id(None, None) is None
    assert resolve_template_id("no_such_template", None) == "no_such_template"  # submit refuses it


@pytest.mark.parametrize(
    ("given", "saved"),
    [
        ("meeting.srt", "meeting.srt"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ann\\notes.txt", "notes.txt"),
        (".env", "env"),
        ("", "upload"),
        (None, "upload"),
        ("réunion du lundi.vtt", "r_union_du_lundi.vtt"),
        ("x" * 100 + ".json", "x" * 48 + ".json"),
    ],
)
def test_upload_names_keep_their_extension_and_nothing_else_unsafe(given: str | None, saved: str) -> None:
    assert _safe_name(given) == saved


def test_serving_needs_a_key_or_insecure_on_loopback() -> None:
    settings = load_settings(env_file=None)
    with pytest.raises(ConfigError, match="SECRET_API_KEY is not set"):
        check_serving(settings, "127.0.0.1", insecure=False)
    with pytest.raises(ConfigError, match="127.0.0.1 only: not on 0.0.0.0"):
        check_serving(settings, "0.0.0.0", insecure=True)
    assert check_serving(settings, "127.0.0.1", insecure=True) is True
    assert check_serving(settings, "::1", insecure=True) is True
    keyed = load_settings(env_file=None, secret_api_key=SecretStr("k"))
    assert check_serving(keyed, "0.0.0.0", insecure=False) is False
    assert "k" not in repr(keyed.secret_api_key)


def test_key_comparison() -> None:
    from maie.api.auth import is_protected, key_matches

    assert key_matches(b"secret-key", b"secret-key")
    assert not key_matches(b"secret-ke", b"secret-key") and not key_matches(b"", b"secret-key")
    assert is_protected("/v1/process") and is_protected("/v1/status/x") and is_protected("/v1/models")
    assert not is_protected("/v1/templates") and not is_protected("/health") and not is_protected("/docs")
