"""Template bundles: the shipped ones, loading, overriding, and the checks of broken bundles."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from maie.errors import ConfigError, InputError
from maie.templates import (
    BUNDLE_FILES,
    EXAMPLE_FILE,
    PROMPT_FILE,
    SCHEMA_FILE,
    builtin_templates_dir,
    check_bundle,
    check_dir,
    list_templates,
    load_template,
    render_partial_notes,
    template_dirs,
)

SHIPPED = [
    "generic_summary",
    "generic_summary_vi",
    "interview",
    "meeting_notes",
    "meeting_notes_vi",
]
VI_SENTENCE = "Chúng ta cần hoàn thành báo cáo trước thứ Sáu."

# Keywords that vLLM's structured-output backends handle poorly or not at all.
UNSUPPORTED_KEYWORDS = {
    "$ref",
    "$defs",
    "definitions",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "format",
    "pattern",
    "patternProperties",
    "if",
    "then",
    "else",
}

VALID_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "x-language": "en",
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 100}},
    "required": ["title"],
    "additionalProperties": False,
}
VALID_EXAMPLE = {"title": "Weekly sync"}
VALID_PROMPT = "Schema:\n{{ schema_json }}\n\nTranscript:\n{{ transcript }}\n"


def write_bundle(
    root: Path,
    name: str = "broken",
    *,
    prompt: str | None = VALID_PROMPT,
    schema: Any = VALID_SCHEMA,
    example: Any = VALID_EXAMPLE,
) -> Path:
    """A bundle directory; None leaves a file out, a str is written as is, anything else as JSON."""
    bundle = root / name
    bundle.mkdir(parents=True)
    for file, content in ((PROMPT_FILE, prompt), (SCHEMA_FILE, schema), (EXAMPLE_FILE, example)):
        if content is None:
            continue
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        (bundle / file).write_text(text, encoding="utf-8")
    return bundle


def named_file(line: str) -> tuple[str, ...]:
    """The bundle directory and file a problem line names."""
    return Path(line.split(": ", 1)[0]).parts[-2:]


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every subschema (dict) of a schema, the schema included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# --- the shipped bundles -------------------------------------------------------------------------


def test_shipped_bundles_are_listed() -> None:
    assert [t.id for t in list_templates()] == SHIPPED


@pytest.mark.parametrize("template_id", SHIPPED)
def test_shipped_bundle_passes_checks(template_id: str) -> None:
    assert check_bundle(builtin_templates_dir() / template_id) == []


@pytest.mark.parametrize("template_id", SHIPPED)
def test_shipped_example_validates(template_id: str) -> None:
    template = load_template(template_id)
    assert template.validate(template.example) == []
    Draft202012Validator(template.schema).validate(template.example)


@pytest.mark.parametrize("template_id", SHIPPED)
def test_shipped_schema_suits_structured_output(template_id: str) -> None:
    template = load_template(template_id)
    schema = template.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert template.language == ("vi" if template_id.endswith("_vi") else "en")
    assert template.description
    for node in walk(schema):
        assert not UNSUPPORTED_KEYWORDS & node.keys(), node
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "object" in types:
            # Closed objects whose every property is required: what strict structured output wants.
            assert node["additionalProperties"] is False
            assert set(node["required"]) == set(node["properties"])
            for name in node["properties"]:
                assert name.isascii() and name.replace("_", "").isalnum() and name.islower()
        if "array" in types:
            assert 0 < node["maxItems"] <= 50
        if "string" in types and "enum" not in node:
            assert 0 < node["maxLength"] <= 3000


@pytest.mark.parametrize("template_id", SHIPPED)
def test_shipped_prompt_uses_both_variables(template_id: str) -> None:
    template = load_template(template_id)
    assert "{{ schema_json }}" in template.prompt_source
    assert "{{ transcript }}" in template.prompt_source
    rendered = template.render("The transcript text.")
    assert template.schema_json in rendered
    assert "The transcript text." in rendered


@pytest.mark.parametrize("template_id", ["generic_summary_vi", "meeting_notes_vi"])
def test_vietnamese_bundle_round_trips_vietnamese_text(template_id: str) -> None:
    template = load_template(template_id)
    rendered = template.render(VI_SENTENCE)
    assert VI_SENTENCE in rendered
    assert "tiếng Việt" in rendered  # the instructions themselves are Vietnamese
    # Descriptions stay readable in the prompt, not \u-escaped.
    assert "\\u" not in template.schema_json
    assert template.schema["description"] in template.schema_json
    example_text = json.dumps(template.example, ensure_ascii=False)
    assert any(not c.isascii() for c in example_text)


def test_interview_sentiment_is_a_fixed_list() -> None:
    template = load_template("interview")
    assert template.schema["properties"]["sentiment"]["enum"] == [
        "positive",
        "neutral",
        "negative",
        "mixed",
    ]
    assert template.validate({**template.example, "sentiment": "angry"}) == [
        "$.sentiment: 'angry' is not one of ['positive', 'neutral', 'negative', 'mixed']"
    ]


def test_template_properties() -> None:
    template = load_template("meeting_notes")
    prompt_bytes = (template.path / PROMPT_FILE).read_bytes()
    assert template.id == "meeting_notes"
    assert template.path == builtin_templates_dir() / "meeting_notes"
    assert template.prompt_sha256 == hashlib.sha256(prompt_bytes).hexdigest()
    assert len(template.schema_sha256) == 64
    assert template.schema_json == json.dumps(template.schema, indent=2, ensure_ascii=False)
    assert template.required_fields[:3] == ["title", "date", "participants"]
    assert "action_items" in template.required_fields


def test_render_keeps_transcript_verbatim() -> None:
    transcript = 'Line one <b>&amp;</b> "quoted"\n\n{{ not a variable }}\n'
    assert transcript in load_template("generic_summary").render(transcript)


# --- validate ------------------------------------------------------------------------------------


def test_validate_reports_errors_with_paths() -> None:
    template = load_template("meeting_notes")
    data = dict(template.example)
    data["title"] = 7
    data["action_items"] = [{"description": "x", "owner": None}, {"description": "y"}]
    data["extra"] = True
    del data["tags"]
    assert template.validate(data) == [
        "$: 'tags' is a required property",
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.action_items[0]: 'due_date' is a required property",
        "$.action_items[1]: 'due_date' is a required property",
        "$.action_items[1]: 'owner' is a required property",
        "$.title: 7 is not of type 'string'",
    ]


def test_validate_sorts_indexes_numerically_and_keeps_lines_short() -> None:
    template = load_template("generic_summary")
    data = dict(template.example, key_points=["ok"] * 10 + [5] + ["x" * 2000])
    errors = template.validate(data)
    assert [e.split(":")[0] for e in errors] == ["$.key_points[10]", "$.key_points[11]"]
    assert all("\n" not in e and len(e) < 400 for e in errors)


# --- ids and directories -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id", ["../etc", "a/b", "A", "", "\x00", "x\x00y", "_private", "a" * 65]
)
def test_invalid_template_id(bad_id: str) -> None:
    with pytest.raises(InputError, match="invalid template id"):
        load_template(bad_id)


def test_unknown_template_lists_available_ids() -> None:
    with pytest.raises(InputError) as info:
        load_template("no_such_template")
    assert str(info.value) == (
        "unknown template 'no_such_template'; available: " + ", ".join(SHIPPED)
    )


def test_user_dir_overrides_and_adds(tmp_path: Path) -> None:
    user = tmp_path / "user"
    shutil.copytree(builtin_templates_dir() / "generic_summary", user / "generic_summary")
    (user / "generic_summary" / PROMPT_FILE).write_text(
        "Custom.\n{{ schema_json }}\n{{ transcript }}\n", encoding="utf-8"
    )
    write_bundle(user, "custom")
    (user / "_drafts").mkdir()
    (user / "_drafts" / PROMPT_FILE).write_text("{{ nope }}", encoding="utf-8")

    assert template_dirs(user) == [user, builtin_templates_dir()]
    overridden = load_template("generic_summary", user)
    assert overridden.path == (user / "generic_summary").resolve()
    assert overridden.render("t").startswith("Custom.\n")
    assert load_template("generic_summary").path == builtin_templates_dir() / "generic_summary"
    assert load_template("custom", user).validate({"title": "x"}) == []
    assert [t.id for t in list_templates(user)] == sorted([*SHIPPED, "custom"])
    with pytest.raises(InputError, match="available: custom, generic_summary,"):
        load_template("missing", user)


def test_missing_user_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_template("generic_summary", tmp_path / "absent")


def test_loaded_bundles_are_cached_until_a_file_changes(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "cached")
    first = load_template("cached", tmp_path)
    assert load_template("cached", tmp_path) is first
    (bundle / PROMPT_FILE).write_text("Changed.\n" + VALID_PROMPT, encoding="utf-8")
    second = load_template("cached", tmp_path)
    assert second is not first
    assert second.prompt_source.startswith("Changed.")


def test_broken_user_bundle_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    write_bundle(tmp_path, "broken", example={"title": 5})
    with pytest.raises(ConfigError) as info:
        load_template("broken", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert named_file(message) == ("broken", EXAMPLE_FILE)
    assert "$.title" in message
    with pytest.raises(ConfigError):
        list_templates(tmp_path)


# --- check_bundle on broken bundles --------------------------------------------------------------


@pytest.mark.parametrize("missing", BUNDLE_FILES)
def test_missing_file(tmp_path: Path, missing: str) -> None:
    kwargs: dict[str, Any] = {
        {PROMPT_FILE: "prompt", SCHEMA_FILE: "schema", EXAMPLE_FILE: "example"}[missing]: None
    }
    problems = check_bundle(write_bundle(tmp_path, **kwargs))
    assert len(problems) == 1
    assert named_file(problems[0]) == ("broken", missing)
    assert "missing" in problems[0]


BROKEN_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("bad schema JSON", {"schema": '{\n  "type": "object",\n}'}, SCHEMA_FILE, "line 3, column 1"),
    ("bad example JSON", {"example": "{'title': 1}"}, EXAMPLE_FILE, "invalid JSON"),
    (
        "invalid schema",
        {"schema": {**VALID_SCHEMA, "properties": {"title": {"type": "strin"}}}},
        SCHEMA_FILE,
        "not valid JSON Schema: at $.properties.title.type",
    ),
    ("schema not an object", {"schema": "[]"}, SCHEMA_FILE, "not a JSON object"),
    (
        "top level not an object",
        {"schema": {"type": "array", "maxItems": 3}, "example": []},
        SCHEMA_FILE,
        '"type": "object"',
    ),
    (
        "other draft",
        {"schema": {**VALID_SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"}},
        SCHEMA_FILE,
        "draft-07",
    ),
    (
        "bad language",
        {"schema": {**VALID_SCHEMA, "x-language": "Vietnamese"}},
        SCHEMA_FILE,
        "x-language",
    ),
    (
        "example does not validate",
        {"example": {"title": 5}},
        EXAMPLE_FILE,
        "$.title: 5 is not of type",
    ),
    (
        "Jinja syntax error",
        {"prompt": "{{ schema_json }}\n{% if %}\n{{ transcript }}\n"},
        PROMPT_FILE,
        "line 2: Jinja syntax error",
    ),
    ("undefined variable", {"prompt": VALID_PROMPT + "{{ speaker }}\n"}, PROMPT_FILE, "speaker"),
    (
        "undefined variable in a branch",
        {"prompt": VALID_PROMPT + "{% if transcript == 'x' %}{{ lang }}{% endif %}"},
        PROMPT_FILE,
        "lang",
    ),
    (
        "undefined attribute",
        {"prompt": VALID_PROMPT + "{{ transcript.speaker }}"},
        PROMPT_FILE,
        "undefined",
    ),
    (
        "prompt without schema_json",
        {"prompt": "Summarise:\n{{ transcript }}\n"},
        PROMPT_FILE,
        "schema_json",
    ),
    (
        "schema_json altered",
        {"prompt": "{{ schema_json | upper }}\n{{ transcript }}\n"},
        PROMPT_FILE,
        "schema_json",
    ),
    (
        "prompt without transcript",
        {"prompt": "Schema: {{ schema_json }}\n"},
        PROMPT_FILE,
        "transcript",
    ),
    (
        "transcript escaped",
        {"prompt": "{{ schema_json }}\n{{ transcript | e }}\n"},
        PROMPT_FILE,
        "transcript",
    ),
    (
        "sandbox violation",
        {"prompt": VALID_PROMPT + "{{ ''.__class__ }}"},
        PROMPT_FILE,
        "rendering",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "file", "fragment"),
    [case[1:] for case in BROKEN_CASES],
    ids=[case[0] for case in BROKEN_CASES],
)
def test_broken_bundle_gives_one_line(
    tmp_path: Path, kwargs: dict[str, Any], file: str, fragment: str
) -> None:
    problems = check_bundle(write_bundle(tmp_path, **kwargs))
    assert len(problems) == 1, problems
    assert named_file(problems[0]) == ("broken", file)
    assert fragment in problems[0]
    assert "\n" not in problems[0]


def test_check_dir(tmp_path: Path) -> None:
    write_bundle(tmp_path, "good")
    write_bundle(tmp_path, "bad", example={})
    write_bundle(tmp_path, "Bad-Name")
    write_bundle(tmp_path, "_ignored", prompt="{{ nope }}")
    (tmp_path / "not_a_bundle").mkdir()
    results = check_dir(tmp_path)
    assert sorted(results) == ["Bad-Name", "bad", "good"]
    assert results["good"] == []
    assert len(results["bad"]) == 1 and "'title' is a required property" in results["bad"][0]
    assert len(results["Bad-Name"]) == 1 and "invalid template id" in results["Bad-Name"][0]
    assert check_dir(tmp_path / "good") == {"good": []}
    assert check_dir(builtin_templates_dir()) == {name: [] for name in SHIPPED}
    with pytest.raises(InputError):
        check_dir(tmp_path / "absent")


# --- partial notes -------------------------------------------------------------------------------


def test_partial_notes_prompt() -> None:
    english = render_partial_notes("Alice will send the report.", "en")
    assert "Alice will send the report." in english
    assert "in English" in english
    vietnamese = render_partial_notes(VI_SENTENCE, "vi")
    assert VI_SENTENCE in vietnamese
    assert "tiếng Việt" in vietnamese
    assert "English" not in vietnamese
