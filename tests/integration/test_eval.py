"""`maie eval` end to end: shared data through real workers and the fake OpenAI servers A and B."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import Worker, dual_env, load_jsonl
from fakes.server_process import FakeServerProcess
from fakes.text import enhance

from maie.eval.metrics import rouge

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAIE = Path(sys.executable).parent / "maie"


def run_eval(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAIE), "eval", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240
    )


def report_files(out: Path, kind: str) -> tuple[str, dict[str, Any], Path]:
    [md] = sorted(out.glob(f"{kind}-*.md"))
    return md.read_text(), json.loads(md.with_suffix(".json").read_text()), md.with_suffix(".png")


def chat_requests(server: FakeServerProcess) -> list[dict[str, object]]:
    return [e for e in server.log() if str(e["path"]).endswith("/chat/completions")]


def enhancement_items(n_lines: int = 4) -> list[dict[str, Any]]:
    """The first two shared items cut to their first turns; `raw` stays word-aligned with `reference`."""
    items = []
    for item in load_jsonl("enhancement_dev.jsonl")[:2]:
        reference = "\n".join(str(item["reference"]).splitlines()[:n_lines])
        raw = " ".join(str(item["raw"]).split()[: len(reference.split())])
        items.append({"id": item["id"], "raw": raw, "reference": reference})
    return items


def bare(word: str) -> str:
    return re.sub(r"^[^\w']+|[^\w']+$", "", word).strip("'")


def test_eval_enhance_through_the_workers(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess, tmp_path: Path
) -> None:
    items = enhancement_items()
    data = tmp_path / "enh.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "reports"
    proc = run_eval(
        ["enhance", str(data), "--out", str(out), "--timeout", "60"], dual_env(server_a, server_b), tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "report: " in proc.stdout
    text, report, png = report_files(out, "enhance")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    for row in (
        "| items | 2 |",
        "| items completed | 2 |",
        "| items failed | 0 |",
        "| words preserved | 1.000 |",
        "| degraded chunk rate | 0.000 (0 of 2) |",
        f"enhance: vllm_server {server_a.base_url} model enhance-model",
    ):
        assert row in text
    assert "sk-test-enhance-key" not in text + json.dumps(report)
    assert len(chat_requests(server_a)) == 2 and chat_requests(server_b) == []

    # One chunk per item, so the fake's reply is the raw line with a capital and a final full stop:
    # one mark, on the last word. The scores follow position by position (the words are aligned).
    tp = fp = fn = right = 0
    for item, row in zip(items, report["items"], strict=True):
        assert row["status"] == "SUCCESS" and row["chunks"] == 1
        assert row["output"] == enhance(item["raw"])
        hyp, ref = row["output"].split(), item["reference"].split()
        assert len(hyp) == len(ref)
        ref_marks = [next((c for c in w[len(w.rstrip(".,?!\"'")) :] if c in ".,?!"), None) for w in ref]
        last_ok = ref_marks[-1] == "."
        tp += last_ok
        fp += not last_ok
        fn += sum(m is not None for m in ref_marks) - last_ok
        cased = sum(bare(h) == bare(r) for h, r in zip(hyp, ref, strict=True))
        right += cased
        assert row["casing_accuracy"] == cased / len(ref)
        assert row["words_preserved"] == 1.0
    overall = report["punctuation"]["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"]) == (tp, fp, fn)
    n_words = sum(len(i["reference"].split()) for i in items)
    assert f"| casing accuracy | {right / n_words:.3f} |" in text
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f"| punctuation F1 overall | {f1:.3f} " in text


def test_eval_summary_through_the_workers(
    dual: dict[str, Worker], server_a: FakeServerProcess, server_b: FakeServerProcess, tmp_path: Path
) -> None:
    items = []
    for item in load_jsonl("summary_dev.jsonl")[:2]:
        transcript = "\n".join(str(item["transcript"]).splitlines()[:8])
        items.append(
            {"id": item["id"], "transcript": transcript, "reference_summary": item["reference_summary"]}
        )
    data = tmp_path / "sum.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "reports"
    args = ["summary", str(data), "--template", "generic_summary", "--out", str(out), "--limit", "2"]
    proc = run_eval(args, dual_env(server_a, server_b), tmp_path)
    assert proc.returncode == 0, proc.stderr
    text, report, png = report_files(out, "summary")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    for row in (
        "| items | 2 |",
        "| items failed | 0 |",
        "| schema-valid rate | 1.000 (2 of 2) |",
        "- Features: enhance, summary",
        f"summary: vllm_server {server_b.base_url} model summary-model",
    ):
        assert row in text
    # Both stages ran per item: enhancement on A, the summary on B.
    assert len(chat_requests(server_a)) == 2 and len(chat_requests(server_b)) == 2
    rows = report["items"]
    for item, row in zip(items, rows, strict=True):
        assert row["status"] == "SUCCESS" and row["schema_valid"] is True
        assert row["main_field"] == "summary"
        # The fake fills each string with its property name and the prompt's last line.
        assert row["summary"]["summary"] == "summary </transcript>"
        assert row["rouge_main"] == rouge(row["summary"]["summary"], item["reference_summary"])
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    for key, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
        mean = sum(r["rouge_main"][key] for r in rows) / 2
        assert f"| {name} F1 main field | {mean:.3f} (all items: {mean:.3f}) |" in text
        assert f"| {name} F1 all strings |" in text
