"""Evaluation metrics on hand-made cases with known scores, JSONL checks, and report rendering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maie.errors import InputError
from maie.eval.data import load_jsonl
from maie.eval.metrics import PRF, casing_accuracy, punctuation_scores, rouge, words_preserved
from maie.eval.models import EnhanceItem, EnhanceReport, Run, SummaryItem, SummaryReport
from maie.eval.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def counts(scores: dict[str, PRF]) -> dict[str, tuple[int, int, int]]:
    return {k: (v.tp, v.fp, v.fn) for k, v in scores.items()}


# --- punctuation ---------------------------------------------------------------------------------


def test_perfect_punctuation_scores_one_everywhere() -> None:
    text = "Hello, world. How are you? Great!"
    scores = punctuation_scores(text, text)
    assert counts(scores) == {
        ".": (1, 0, 0),
        ",": (1, 0, 0),
        "?": (1, 0, 0),
        "!": (1, 0, 0),
        "overall": (4, 0, 0),
    }
    assert all(s.precision == s.recall == s.f1 == 1.0 for s in scores.values())


def test_one_missing_comma() -> None:
    scores = punctuation_scores("Hello world. How are you?", "Hello, world. How are you?")
    comma, overall = scores[","], scores["overall"]
    assert (comma.tp, comma.fp, comma.fn) == (0, 0, 1)
    assert comma.precision == 0.0 and comma.recall == 0.0 and comma.f1 == 0.0
    assert (overall.tp, overall.fp, overall.fn) == (2, 0, 1)
    assert overall.precision == 1.0
    assert overall.recall == pytest.approx(2 / 3)
    assert overall.f1 == pytest.approx(0.8)
    # A mark that neither side uses is perfect: nothing to find, nothing claimed.
    assert scores["!"].f1 == 1.0


def test_extra_comma_lowers_precision_only() -> None:
    scores = punctuation_scores("So, we agree. Good.", "So we agree. Good.")
    assert (scores[","].tp, scores[","].fp, scores[","].fn) == (0, 1, 0)
    # Recall is undefined with nothing to find; a claim made anyway scores 0 like precision.
    assert (scores[","].precision, scores[","].recall, scores[","].f1) == (0.0, 0.0, 0.0)
    overall = scores["overall"]
    assert overall.precision == pytest.approx(2 / 3) and overall.recall == 1.0
    assert overall.f1 == pytest.approx(0.8)


def test_wrong_mark_is_a_false_positive_and_a_false_negative() -> None:
    scores = punctuation_scores("Really. yes", "Really? yes")
    assert counts(scores)["."] == (0, 1, 0)
    assert counts(scores)["?"] == (0, 0, 1)
    assert counts(scores)["overall"] == (0, 1, 1)
    assert scores["overall"].f1 == 0.0


def test_marks_on_unaligned_words_count() -> None:
    # The reference word "yes," is missing from the hypothesis: its comma is missed.
    dropped = punctuation_scores("we agree.", "yes, we agree.")
    assert counts(dropped)[","] == (0, 0, 1)
    assert counts(dropped)["overall"] == (1, 0, 1)
    # The hypothesis inserted "well,": its comma is a false positive.
    inserted = punctuation_scores("well, we agree.", "we agree.")
    assert counts(inserted)[","] == (0, 1, 0)
    # A substituted word is still an aligned position.
    substituted = punctuation_scores("the hat sat.", "the cat sat.")
    assert counts(substituted)["overall"] == (1, 0, 0)


def test_mark_after_a_word_reading_rules() -> None:
    # Quotes and spaces are skipped, the first mark wins, an ellipsis is a period, apostrophes trim.
    scores = punctuation_scores('He said "no." Why?! Well... \'cause', 'He said "no." Why? Well. \'cause')
    assert counts(scores)["overall"] == (3, 0, 0)
    # Words are aligned on their lowercase form, so casing does not break the alignment.
    assert counts(punctuation_scores("OKAY, fine.", "okay, Fine."))["overall"] == (2, 0, 0)


def test_punctuation_of_empty_texts() -> None:
    assert punctuation_scores("", "")["overall"].f1 == 1.0
    assert counts(punctuation_scores("", "Yes."))["overall"] == (0, 0, 1)


# --- casing and preserved words ------------------------------------------------------------------


def test_casing_accuracy_over_matching_words() -> None:
    # I/i, think, Paris/paris, is, nice: think, is and nice are cased alike.
    assert casing_accuracy("i think Paris is nice", "I think paris is nice.") == pytest.approx(3 / 5)
    # A substituted word (Bob/Rob) is not judged.
    assert casing_accuracy("I saw Bob", "I saw Rob") == 1.0
    assert casing_accuracy("i saw bob", "I saw Rob") == pytest.approx(1 / 2)
    # Apostrophes at word ends do not count; nothing comparable scores 1.0.
    assert casing_accuracy("'Cause it's", "cause it's") == pytest.approx(1 / 2)
    assert casing_accuracy("", "Hello") == 1.0


def test_words_preserved() -> None:
    raw = "so we need a remote control"
    assert words_preserved("So, we need a remote control.", raw) == 1.0
    assert words_preserved("So we need remote control.", raw) == pytest.approx(5 / 6)
    assert words_preserved("So we need a remote controller.", raw) == pytest.approx(5 / 6)
    # Inserted words cost nothing here; they do in punctuation precision.
    assert words_preserved("So, um, we really need a remote control.", raw) == 1.0
    assert words_preserved("", raw) == 0.0
    assert words_preserved("anything", "") == 1.0


# --- ROUGE ---------------------------------------------------------------------------------------


def test_rouge_same_length() -> None:
    # Unigram overlap 5 of 6; bigram overlap 3 of 5 (the cat, on the, the mat); LCS 5.
    scores = rouge("the cat sat on the mat", "the cat was on the mat")
    assert scores == {
        "rouge1": pytest.approx(5 / 6),
        "rouge2": pytest.approx(3 / 5),
        "rougeL": pytest.approx(5 / 6),
    }


def test_rouge_different_lengths() -> None:
    # overlap 2, P 2/3, R 2/4 -> 4/7. R-2: overlap 1, P 1/2, R 1/3 -> 2/5. LCS "a b" -> 4/7.
    assert rouge("a b c", "a b d e") == {
        "rouge1": pytest.approx(4 / 7),
        "rouge2": pytest.approx(2 / 5),
        "rougeL": pytest.approx(4 / 7),
    }


def test_rouge_clipping_order_and_tokenization() -> None:
    # Repeated words are clipped to the reference's count: overlap 1, P 1/3, R 1/2.
    assert rouge("the the the", "the cat")["rouge1"] == pytest.approx(0.4)
    # Same words, other order: ROUGE-1 is perfect, ROUGE-2 zero, LCS 1 of 2.
    assert rouge("b a", "a b") == {"rouge1": 1.0, "rouge2": 0.0, "rougeL": 0.5}
    # Lowercase \w+ words, punctuation ignored: "It's" is "it" and "s".
    assert rouge("It's GOOD!", "it s good") == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge("", "a b") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


# --- JSONL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("", "no items"),
        ('{"raw": "a", "reference": "A."}\n{oops\n', "line 2: not valid JSON"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ('{"raw": "a"}\n', "line 1: missing or empty string field 'reference'"),
        ('{"raw": "  ", "reference": "A."}\n', "field 'raw'"),
    ],
)
def test_load_jsonl_refuses_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_jsonl(path, ("raw", "reference"))
    assert "\n" not in str(info.value)


def test_load_jsonl_gives_ids(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": 7, "raw": "a", "reference": "A."}\n\n{"raw": "b", "reference": "B."}\n')
    assert [i["id"] for i in load_jsonl(path, ("raw", "reference"))] == ["7", "line-3"]


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "enhance", "missing.jsonl"],
        ["eval", "summary", "bad.jsonl", "--template", "generic_summary"],
    ],
)
def test_cli_exits_2_with_one_line_for_a_bad_file(tmp_path: Path, args: list[str]) -> None:
    from maie.cli import app

    (tmp_path / "bad.jsonl").write_text("not json\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("maie: error:") and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_cli_help_does_not_import_matplotlib() -> None:
    code = "import sys, maie.cli; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# --- reports -------------------------------------------------------------------------------------


def run_info() -> Run:
    return Run(
        source="/data/enhancement_dev.jsonl",
        started_at="2025-01-02T03:04:05+00:00",
        settings=["LLM_BACKEND=vllm_server", "enhance: endpoint http://x/v1, model m"],
        served_by={"enhance": "vllm_server http://x/v1 model m (prompt sha256 0123456789ab)"},
        seconds=12.5,
    )


def test_enhance_report_markdown_json_and_chart(tmp_path: Path) -> None:
    good = EnhanceItem(
        "a",
        4,
        "SUCCESS",
        seconds=2.0,
        punctuation={".": PRF(1, 0, 1), ",": PRF(0, 1, 0), "?": PRF(), "!": PRF()},
        casing=(3, 4),
        preserved=(4, 4),
        chunks=2,
        degraded_chunks=1,
        output="Hello, there.",
        raw_punctuation={".": PRF(0, 0, 2), ",": PRF(), "?": PRF(), "!": PRF()},
        raw_casing=(2, 4),
    )
    bad = EnhanceItem("b|c", 9, "FAILURE", error="enhance chunk 0: backend_rejected: HTTP 400", seconds=1.0)
    md = write_report(EnhanceReport(run_info(), [good, bad]), tmp_path)
    assert md.name == "enhance-enhancement_dev-20250102-030405.md"
    text = md.read_text()
    for row in (
        "| items | 2 |",
        "| items completed | 1 |",
        "| items failed | 1 |",
        "| punctuation F1 overall | 0.500 (P 0.500, R 0.500, support 2) |",
        "| punctuation F1 '.' | 0.667 (P 1.000, R 0.500, support 2) |",
        "| casing accuracy | 0.750 |",
        "| casing accuracy of the raw input (baseline) | 0.500 |",
        "| words preserved | 1.000 |",
        "| degraded chunk rate | 0.500 (1 of 2) |",
        "| latency per item (s) | mean 2.00, median 2.00, max 2.00 |",
        "- `b|c` FAILURE: enhance chunk 0: backend_rejected: HTTP 400",
        "| b\\|c | 9 | FAILURE |",
        "![per-item scores](enhance-enhancement_dev-20250102-030405.png)",
    ):
        assert row in text
    assert md.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    data = json.loads(md.with_suffix(".json").read_text())
    assert data["punctuation"]["overall"]["f1"] == 0.5
    assert [i["status"] for i in data["items"]] == ["SUCCESS", "FAILURE"]
    assert data["items"][0]["punctuation"]["overall"] == {
        "tp": 1,
        "fp": 1,
        "fn": 1,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
    }


def test_summary_report(tmp_path: Path) -> None:
    good = SummaryItem(
        "m1",
        100,
        "SUCCESS",
        seconds=3.0,
        schema_valid=True,
        main_field="summary",
        rouge_main={"rouge1": 0.5, "rouge2": 0.25, "rougeL": 0.4},
        rouge_all={"rouge1": 0.6, "rouge2": 0.3, "rougeL": 0.5},
        prompt_tokens=100,
        completion_tokens=20,
    )
    bad = SummaryItem("m2", 50, "INVALID", error="summary does not match the schema", main_field="summary")
    md = write_report(
        SummaryReport(run_info(), "generic_summary", ["enhance", "summary"], [good, bad]), tmp_path
    )
    text = md.read_text()
    for row in (
        "| schema-valid rate | 0.500 (1 of 2) |",
        "| ROUGE-1 F1 main field | 0.500 (all items: 0.250) |",
        "| ROUGE-L F1 all strings | 0.500 (all items: 0.250) |",
        "| tokens (prompt / completion) | 100 / 20 |",
        "- Features: enhance, summary",
    ):
        assert row in text
    assert md.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)


def test_report_never_shows_api_keys(tmp_path: Path) -> None:
    from maie.eval.runner import _describe_settings
    from maie.settings import load_settings

    s = load_settings(
        env_file=None,
        llm_server={"enhance_base_url": "http://a/v1", "enhance_api_key": "sk-secret-123"},
    )
    run = run_info()
    run.settings = _describe_settings(s)
    md = write_report(EnhanceReport(run, []), tmp_path)
    text = md.read_text() + md.with_suffix(".json").read_text()
    assert "http://a/v1" in text and "sk-secret-123" not in text
