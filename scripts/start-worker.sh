#!/usr/bin/env bash
# Start one MAIE worker pool as its definition in workers/<pool>.env says:
#   celery -A maie worker -Q <queue> -P <pool type> -c <concurrency> -n <pool>@%h -E
#
#   scripts/start-worker.sh enhance|summary|asr [--detach] [--no-supervise] [extra celery worker arguments]
#
# The worker is supervised (scripts/lib/supervise.sh): restarted with backoff when it exits
# unexpectedly (a crash, SIGKILL, the out-of-memory killer), stopped for good by SIGTERM to the
# supervisor (scripts/kill_maie.sh, `docker compose stop`, systemd). --no-supervise runs Celery
# directly, for a service manager that restarts it itself (the systemd unit in docs/OPERATIONS.md).
#
# Foreground by default (the script becomes the supervisor: compose.yaml runs it this way). With
# --detach the supervisor runs in the background with its pid in run/worker-<pool>.pid and the
# worker's output in logs/worker-<pool>.out, and the script returns once the worker is ready, or
# fails with the last lines of that output. Stop detached processes with scripts/kill_maie.sh.
#
# Concurrency: WORKER_CONCURRENCY, else the default for the pool's queue (16 requests in flight for
# vllm_server, LLM_ENHANCE__MAX_NUM_SEQS / LLM_SUM__MAX_NUM_SEQS for local_vllm, ASR__CONCURRENCY for
# asr), read through MAIE's settings (environment and .env). `-c N` among the extra arguments wins.
# Environment: MAIE_RUN_DIR (default run), LOG_DIR (default logs), MAIE_READY_TIMEOUT (default 120 s).
set -euo pipefail

usage() {
    echo "usage: scripts/start-worker.sh enhance|summary|asr [--detach] [--no-supervise] [extra celery worker arguments]" >&2
    exit "${1:-2}"
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/procs.sh
. scripts/lib/procs.sh

[[ $# -ge 1 ]] || usage
pool=$1
shift
case "$pool" in
-h | --help) usage 0 ;;
esac
pool_file="workers/$pool.env"
if [[ ! $pool =~ ^[a-z0-9_-]+$ || ! -f $pool_file ]]; then
    echo "error: unknown pool '$pool' (no $pool_file); pools: enhance, summary, asr" >&2
    exit 2
fi

detach=0
supervise=1
extra=()
for arg in "$@"; do
    case "$arg" in
    --detach) detach=1 ;;
    --no-supervise) supervise=0 ;;
    *) extra+=("$arg") ;;
    esac
done

pool_POOL="" pool_QUEUE="" pool_POOL_TYPE="" pool_SERVER_SETTINGS="" pool_ENGINE_SETTINGS=""
read_pool_file "$pool_file"
for key in POOL QUEUE POOL_TYPE; do
    var="pool_$key"
    if [[ -z ${!var} ]]; then
        echo "error: $pool_file sets no $key" >&2
        exit 2
    fi
done
python=$(maie_python)
celery=$(maie_celery)
# Resolved by MAIE's own settings: a configuration error (a removed variable name, say) stops here.
concurrency=$("$python" -m maie.serve worker-concurrency "$pool_file")

cmd=("$celery" -A maie worker -Q "$pool_QUEUE" -P "$pool_POOL_TYPE" -c "$concurrency"
    -n "$pool_POOL@%h" -E --loglevel INFO ${extra[@]+"${extra[@]}"})
echo "==> $pool pool: queue $pool_QUEUE, pool $pool_POOL_TYPE, concurrency $concurrency" \
    "(settings $pool_SERVER_SETTINGS* or $pool_ENGINE_SETTINGS*)"

worker_ready() {
    [[ $(tail -c "+$3" "$2") == *" ready."* ]]
}

if ((supervise)); then
    cmd=(scripts/lib/supervise.sh "worker-$pool" "${cmd[@]}")
fi
if ((detach)); then
    start_detached "worker-$pool" worker_ready "${MAIE_READY_TIMEOUT:-120}" "${cmd[@]}"
else
    exec "${cmd[@]}"
fi
