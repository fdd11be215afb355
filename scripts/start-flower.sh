#!/usr/bin/env bash
# Start Flower, Celery's dashboard, on MAIE's broker:
#   celery -A maie flower
#
#   scripts/start-flower.sh [--detach] [extra flower arguments]
#
# Settings come from the environment and .env, as for `celery -A maie flower` (maie/flower.py):
# basic auth is required, FLOWER_BASIC_AUTH=user:password (several: user1:pw1,user2:pw2), passed
# to Flower in its environment, so the password never appears on a command line; to run without
# auth anyway (a throwaway local setup), FLOWER_UNAUTHENTICATED=1, on a loopback address only.
# FLOWER_PORT (5555) and FLOWER_ADDRESS (127.0.0.1) set where it listens. /healthcheck and /metrics
# are exempt from auth in Flower: never publish its port (see docs/OPERATIONS.md).
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

python=$(maie_python)
celery=$(maie_celery)
# The rules of `celery -A maie flower` itself (maie/flower.py), read from the environment and .env:
# auth required unless FLOWER_UNAUTHENTICATED=1 (then loopback only); prints the port.
port=$("$python" -m maie.flower check ${extra[@]+"${extra[@]}"})
cmd=("$celery" -A maie flower ${extra[@]+"${extra[@]}"})

flower_ready() {
    http_ok "$port" /healthcheck
}

if ((detach)); then
    start_detached flower flower_ready "${MAIE_READY_TIMEOUT:-120}" "${cmd[@]}"
else
    exec "${cmd[@]}"
fi
