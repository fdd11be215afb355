#!/usr/bin/env bash
# Start Flower, Celery's dashboard, on MAIE's broker:
#   celery -A maie flower --port=${FLOWER_PORT:-5555} --address=${FLOWER_ADDRESS:-127.0.0.1}
#
#   scripts/start-flower.sh [--detach] [extra flower arguments]
#
# Basic auth is required: FLOWER_BASIC_AUTH=user:password (several: user1:pw1,user2:pw2). Flower
# reads it from the environment, so the password never appears on a command line. To run without
# auth anyway (a throwaway local setup), set FLOWER_UNAUTHENTICATED=1. /healthcheck and /metrics are
# exempt from auth in Flower: never publish its port (see docs/OPERATIONS.md).
# --detach: background, pid in run/flower.pid, output in logs/flower.out; returns once Flower answers.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/procs.sh
. scripts/lib/procs.sh

detach=0
extra=()
for arg in "$@"; do
    case "$arg" in
    --detach) detach=1 ;;
    -h | --help)
        echo "usage: scripts/start-flower.sh [--detach] [extra flower arguments]"
        exit 0
        ;;
    *) extra+=("$arg") ;;
    esac
done

if [[ -z ${FLOWER_BASIC_AUTH:-} ]]; then
    if [[ ${FLOWER_UNAUTHENTICATED:-} != 1 ]]; then
        echo "error: FLOWER_BASIC_AUTH is not set: set FLOWER_BASIC_AUTH=user:password" \
            "(or FLOWER_UNAUTHENTICATED=1 to run Flower without authentication)" >&2
        exit 2
    fi
    unset FLOWER_BASIC_AUTH
    echo "warning: Flower runs WITHOUT authentication (FLOWER_UNAUTHENTICATED=1)" >&2
else
    IFS=',' read -r -a credentials <<<"$FLOWER_BASIC_AUTH"
    for credential in "${credentials[@]}"; do
        if [[ ! $credential =~ ^[^:]+:.+$ ]]; then
            echo "error: FLOWER_BASIC_AUTH must be user:password[,user2:password2]" >&2
            exit 2
        fi
    done
    export FLOWER_BASIC_AUTH
fi

port=${FLOWER_PORT:-5555}
address=${FLOWER_ADDRESS:-127.0.0.1}
if [[ ! $port =~ ^[0-9]+$ ]]; then
    echo "error: FLOWER_PORT must be a port number, not '$port'" >&2
    exit 2
fi
celery=$(maie_celery)
cmd=("$celery" -A maie flower --port="$port" --address="$address" ${extra[@]+"${extra[@]}"})

flower_ready() {
    http_ok "$port" /healthcheck
}

if ((detach)); then
    start_detached flower flower_ready "${MAIE_READY_TIMEOUT:-120}" "${cmd[@]}"
else
    exec "${cmd[@]}"
fi
