#!/usr/bin/env bash
# Keep one worker process running: scripts/start-worker.sh runs a pool through this script.
#
#   scripts/lib/supervise.sh NAME CMD...
#
# Runs CMD as a child and waits. When the child exits without being asked to, it is started again
# after a backoff: MAIE_RESTART_BACKOFF_MIN seconds (default 1), doubling at each consecutive
# restart up to MAIE_RESTART_BACKOFF_MAX (default 60); a child that ran MAIE_RESTART_STABLE_SECONDS
# (default 60) before exiting starts the count again. Not restarted:
#   - exit status 0: the worker shut down cleanly because someone asked it to (SIGTERM sent to the
#     worker itself, `celery control shutdown`);
#   - exit status 2: a usage or configuration error (Celery's option parser, MAIE's settings); a
#     restart cannot fix it.
# Everything else is restarted: status 1 (Celery's "Unrecoverable error", e.g. after a broker
# crash), or death by a signal (SIGKILL, the kernel's out-of-memory killer).
#
# SIGTERM and SIGQUIT are passed to the child (Celery: warm and cold shutdown); the script then
# waits for it and exits with its status, without restarting. scripts/kill_maie.sh stops a pool
# this way, by the pid file holding this script's pid. SIGINT is passed on too, unless stdin is a
# terminal: there Ctrl-C already reached the child, and a second SIGINT would make its shutdown cold.
# Each restart is one line on stderr (the pool's console output, logs/worker-<pool>.out).
set -uo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: scripts/lib/supervise.sh NAME CMD..." >&2
    exit 2
fi
name=$1
shift
backoff_min=${MAIE_RESTART_BACKOFF_MIN:-1}
backoff_max=${MAIE_RESTART_BACKOFF_MAX:-60}
stable=${MAIE_RESTART_STABLE_SECONDS:-60}
for value in "$backoff_min" "$backoff_max" "$stable"; do
    if [[ ! $value =~ ^[0-9]+$ ]]; then
        echo "error: MAIE_RESTART_BACKOFF_MIN, _MAX and MAIE_RESTART_STABLE_SECONDS take whole seconds" >&2
        exit 2
    fi
done

say() {
    printf '==== %s supervise %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name" "$*" >&2
}

stopping=0
child=0
sleeper=0
on_signal() {
    stopping=1
    if ((child)) && [[ $1 != INT || ! -t 0 ]]; then
        kill -"$1" "$child" 2>/dev/null || true
    fi
    if ((sleeper)); then
        kill "$sleeper" 2>/dev/null || true
    fi
}
trap 'on_signal TERM' TERM
trap 'on_signal QUIT' QUIT
trap 'on_signal INT' INT

delay=$backoff_min
restarts=0
status=0
while :; do
    started=$SECONDS
    "$@" &
    child=$!
    # A signal that arrived between the check below and the start is passed on now.
    if ((stopping)); then
        kill -TERM "$child" 2>/dev/null || true
    fi
    # `wait` returns early (128 + signal) when a trapped signal arrives: wait again while the child
    # runs. Once it is gone, one more `wait` has its own status if the last one was cut short (bash
    # keeps it; an older bash that does not answers 127, and the status already read stands).
    while :; do
        wait "$child"
        status=$?
        kill -0 "$child" 2>/dev/null && continue
        wait "$child" 2>/dev/null
        again=$?
        ((again == 127)) || status=$again
        break
    done
    child=0
    ran=$((SECONDS - started))
    if ((stopping)); then
        exit "$status"
    fi
    if ((status == 0 || status == 2)); then
        say "exited with status $status after $ran s; not restarted (status 0: asked to stop, 2: usage or configuration error)"
        exit "$status"
    fi
    if ((ran >= stable)); then
        delay=$backoff_min
    fi
    restarts=$((restarts + 1))
    how="status $status"
    if ((status > 128)); then
        how="signal $((status - 128)) ($(kill -l $((status - 128)) 2>/dev/null || echo '?'))"
    fi
    say "exited unexpectedly ($how) after $ran s; restart $restarts in $delay s"
    sleep "$delay" &
    sleeper=$!
    wait "$sleeper" 2>/dev/null
    sleeper=0
    if ((stopping)); then
        say "stopped while waiting to restart"
        exit 0
    fi
    delay=$((delay * 2 > backoff_max ? backoff_max : delay * 2))
    ((delay > 0)) || delay=1
done
