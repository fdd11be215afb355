#!/usr/bin/env bash
# Stop exactly what scripts/start-worker.sh, start-flower.sh and start-vllm-server.sh started with
# --detach, by their pid files in run/ (MAIE_RUN_DIR overrides it):
#
#   scripts/kill_maie.sh [--timeout SECONDS]
#
# Workers and Flower first, then the vLLM servers (so in-flight tasks can finish their LLM calls).
# Each gets SIGTERM, a warm shutdown: a worker stops taking tasks and finishes the ones it runs.
# Whatever still runs after the timeout (default 60 s per stage) gets SIGKILL; a task it was running
# is redelivered after BROKER_VISIBILITY_TIMEOUT. Before signalling, the pid must still be the
# program the scripts started (command line and start time): a stale pid file never kills an
# unrelated process. Pid files are removed. Nothing is matched by name (no pkill).
set -euo pipefail

usage() {
    echo "usage: scripts/kill_maie.sh [--timeout SECONDS]" >&2
    exit "${1:-2}"
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=lib/procs.sh
. scripts/lib/procs.sh

timeout=60
while [[ $# -gt 0 ]]; do
    case "$1" in
    --timeout)
        [[ $# -ge 2 ]] || usage
        timeout=$2
        shift 2
        ;;
    --timeout=*)
        timeout=${1#--timeout=}
        shift
        ;;
    -h | --help) usage 0 ;;
    *) usage ;;
    esac
done
if [[ ! $timeout =~ ^[0-9]+$ ]]; then
    echo "error: --timeout takes a whole number of seconds, not '$timeout'" >&2
    exit 2
fi

status=0
found=0

# stop_stage PIDFILE...: SIGTERM each live process of ours, wait for all, SIGKILL what remains.
stop_stage() {
    local file name pid recorded cmd names=() pids=() started i
    for file in "$@"; do
        [[ -f $file ]] || continue
        found=1
        name=$(basename "$file" .pid)
        pid=$(sed -n 1p "$file" | tr -d '[:space:]')
        if [[ ! $pid =~ ^[0-9]+$ ]]; then
            echo "$name: $file holds no pid; removed"
            rm -f "$file"
            continue
        fi
        if ! proc_alive "$pid"; then
            echo "$name: not running (pid $pid); stale $file removed"
            rm -f "$file"
            continue
        fi
        cmd=$(proc_cmdline "$pid")
        recorded=$(sed -n 's/^starttime=//p' "$file" | tr -d '[:space:]')
        if ! expected_cmdline "$name" "$cmd" ||
            [[ -n $recorded && -r /proc/$pid/stat && $(proc_starttime "$pid") != "$recorded" ]]; then
            echo "$name: pid $pid is now another process (${cmd:0:80}); left alone, stale $file removed"
            rm -f "$file"
            continue
        fi
        if ! kill -TERM "$pid" 2>/dev/null; then
            echo "$name: cannot signal pid $pid (permission denied?); $file kept" >&2
            status=1
            continue
        fi
        echo "$name: SIGTERM sent to pid $pid (warm shutdown, up to $timeout s)"
        names+=("$name")
        pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    started=$SECONDS
    while ((SECONDS - started < timeout)); do
        local running=0
        for pid in "${pids[@]}"; do
            if proc_alive "$pid"; then
                running=1
                break
            fi
        done
        ((running)) || break
        sleep 0.2
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        name=${names[$i]}
        if proc_alive "$pid"; then
            # Its own session (started detached): take its children (a vLLM engine) along.
            if [[ $(proc_pgid "$pid") == "$pid" ]]; then
                kill -KILL -- "-$pid" 2>/dev/null || true
            else
                kill -KILL "$pid" 2>/dev/null || true
            fi
            local waited=0
            while proc_alive "$pid" && ((waited < 50)); do
                sleep 0.2
                waited=$((waited + 1))
            done
            if proc_alive "$pid"; then
                echo "$name: pid $pid survived SIGKILL; $RUN_DIR/$name.pid kept" >&2
                status=1
                continue
            fi
            echo "$name: stopped (pid $pid) with SIGKILL after $timeout s"
        else
            echo "$name: stopped (pid $pid) after $((SECONDS - started)) s"
        fi
        rm -f "$RUN_DIR/$name.pid"
    done
}

if [[ -d $RUN_DIR ]]; then
    shopt -s nullglob
    stop_stage "$RUN_DIR"/worker-*.pid "$RUN_DIR"/flower.pid
    stop_stage "$RUN_DIR"/vllm-*.pid
fi
if ((!found)); then
    echo "nothing to stop: no pid files in $RUN_DIR/"
fi
exit "$status"
