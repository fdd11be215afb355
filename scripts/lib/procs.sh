# shellcheck shell=bash
# Process functions for the start-*.sh scripts and kill_maie.sh: pid files, detached starts, checks.
# Sourced from the repository root. A pid file is run/<name>.pid (MAIE_RUN_DIR overrides run/):
# line 1 the pid, line 2 `starttime=<ticks>` (Linux) so a recycled pid is never taken for ours.
# Names: worker-<pool>, flower, vllm-<task>. Output of a detached process: $LOG_DIR/<name>.out.

RUN_DIR=${MAIE_RUN_DIR:-run}
OUT_DIR=${LOG_DIR:-logs}

maie_python() {
    if [[ -x .venv/bin/python ]]; then
        echo .venv/bin/python
    elif command -v python3 >/dev/null 2>&1; then
        echo python3
    else
        echo python
    fi
}

maie_celery() {
    if [[ -x .venv/bin/celery ]]; then
        echo .venv/bin/celery
    elif command -v celery >/dev/null 2>&1; then
        echo celery
    else
        echo "error: celery not found: create .venv (pip install -e '.[dev]') or put celery on PATH" >&2
        return 1
    fi
}

# read_pool_file FILE: sets pool_POOL, pool_QUEUE, pool_TASK, pool_POOL_TYPE, ... from KEY=value lines.
read_pool_file() {
    local key value
    while IFS='=' read -r key value || [[ -n $key ]]; do
        key=${key//[[:space:]]/}
        [[ -z $key || $key == \#* ]] && continue
        if [[ ! $key =~ ^[A-Z_][A-Z0-9_]*$ ]]; then
            echo "error: $1: bad line '$key=$value'" >&2
            return 1
        fi
        value=${value%%#*}
        value=${value%"${value##*[![:space:]]}"}
        printf -v "pool_$key" '%s' "$value"
    done <"$1"
}

# env_file_value NAME: NAME's value in ./.env (last assignment wins), or nothing.
env_file_value() {
    [[ -f .env ]] || return 0
    local line value=""
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line#"${line%%[![:space:]]*}"}
        line=${line#export }
        if [[ $line == "$1="* ]]; then
            value=${line#"$1="}
            value=${value%\"}
            value=${value#\"}
            value=${value%\'}
            value=${value#\'}
        fi
    done <.env
    printf '%s' "$value"
}

# proc_state PID: the one-letter state (R, S, Z, ...), or nothing when there is no such process.
proc_state() {
    local stat
    if [[ -r /proc/$1/stat ]]; then
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
        stat=${stat##*) }
        printf '%s' "${stat%% *}"
    else
        ps -o stat= -p "$1" 2>/dev/null | cut -c1 || true
    fi
}

# proc_alive PID: the process exists and is not a zombie.
proc_alive() {
    local state
    state=$(proc_state "$1")
    [[ -n $state && $state != Z && $state != X ]]
}

proc_cmdline() {
    if [[ -r /proc/$1/cmdline ]]; then
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
    else
        ps -o args= -p "$1" 2>/dev/null || true
    fi
}

# proc_starttime PID: clock ticks since boot at which the process started (Linux), or nothing.
proc_starttime() {
    local stat fields
    [[ -r /proc/$1/stat ]] || return 0
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    read -r -a fields <<<"${stat##*) }"
    printf '%s' "${fields[19]:-}"
}

proc_pgid() {
    local stat fields
    if [[ -r /proc/$1/stat ]]; then
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
        read -r -a fields <<<"${stat##*) }"
        printf '%s' "${fields[2]:-}"
    else
        ps -o pgid= -p "$1" 2>/dev/null | tr -d ' ' || true
    fi
}

# expected_cmdline NAME CMDLINE: whether CMDLINE is what the scripts start under pid file NAME.
expected_cmdline() {
    # Celery retitles its processes: "[celeryd: enhance@host:MainProcess] -active- (-A maie worker ...)".
    local name=$1 cmd=" ${2//[()]/ } " queue pool_QUEUE=""
    case "$name" in
    worker-*)
        queue=${name#worker-}
        if [[ -f workers/$queue.env ]]; then
            read_pool_file "workers/$queue.env" && queue=${pool_QUEUE:-$queue}
        fi
        [[ $cmd == *" -A maie worker "* && $cmd == *" -Q $queue "* ]]
        ;;
    flower) [[ $cmd == *" -A maie flower "* ]] ;;
    vllm-*)
        [[ $cmd == *" -m vllm.entrypoints.openai.api_server "* ||
            $cmd == *" -m maie.serve run ${name#vllm-} "* ]]
        ;;
    *) return 1 ;;
    esac
}

# pidfile_pid NAME: prints the pid of NAME's pid file when that process is alive and is ours.
pidfile_pid() {
    local file="$RUN_DIR/$1.pid" pid recorded=""
    [[ -f $file ]] || return 1
    pid=$(sed -n 1p "$file" | tr -d '[:space:]')
    recorded=$(sed -n 's/^starttime=//p' "$file" | tr -d '[:space:]')
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    proc_alive "$pid" || return 1
    expected_cmdline "$1" "$(proc_cmdline "$pid")" || return 1
    if [[ -n $recorded && -r /proc/$pid/stat && $(proc_starttime "$pid") != "$recorded" ]]; then
        return 1
    fi
    printf '%s' "$pid"
}

write_pidfile() {
    local file="$RUN_DIR/$1.pid" tmp
    tmp="$file.tmp.$$"
    {
        echo "$2"
        local start
        start=$(proc_starttime "$2")
        [[ -z $start ]] || echo "starttime=$start"
    } >"$tmp"
    mv -f "$tmp" "$file"
}

# http_ok PORT PATH: a GET on 127.0.0.1:PORT answers 200 within 5 s.
http_ok() {
    (
        exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        IFS= read -r -t 5 line <&3 || exit 1
        [[ $line == *" 200"* ]]
    )
}

# stop_pid PID [GRACE]: SIGTERM, wait up to GRACE seconds (default 10), then SIGKILL its group.
stop_pid() {
    local pid=$1 grace=${2:-10} waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while proc_alive "$pid" && ((waited < grace * 5)); do
        sleep 0.2
        waited=$((waited + 1))
    done
    proc_alive "$pid" || return 0
    if [[ $(proc_pgid "$pid") == "$pid" ]]; then
        kill -KILL -- "-$pid" 2>/dev/null || true
    else
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# wait_sink PID: until the output sink has written what the exited process left (it ends at EOF).
wait_sink() {
    local waited=0
    while proc_alive "$1" && ((waited < 100)); do
        sleep 0.1
        waited=$((waited + 1))
    done
}

# start_detached NAME READY_FN TIMEOUT CMD...: runs CMD in the background in its own session with
# run/NAME.pid and its output in $LOG_DIR/NAME.out (through scripts/lib/rotate_out.py: a new file
# per start, rotated at LOG_MAX_BYTES, LOG_BACKUP_COUNT old files kept); returns once
# `READY_FN PID OUT OFFSET` succeeds, or fails with the output's last lines (and stops what it started).
start_detached() {
    local name=$1 ready=$2 timeout=$3 out pid offset waited=0 sink sink_pid max_bytes backups
    shift 3
    out="$OUT_DIR/$name.out"
    mkdir -p "$RUN_DIR" "$OUT_DIR"
    if pid=$(pidfile_pid "$name"); then
        echo "error: $name is already running (pid $pid, $RUN_DIR/$name.pid); stop it with scripts/kill_maie.sh" >&2
        return 1
    fi
    rm -f "$RUN_DIR/$name.pid"
    max_bytes=${LOG_MAX_BYTES:-$(env_file_value LOG_MAX_BYTES)}
    backups=${LOG_BACKUP_COUNT:-$(env_file_value LOG_BACKUP_COUNT)}
    # A new file per start (the previous run's output becomes NAME.out.1): readiness reads it whole.
    "$(maie_python)" scripts/lib/rotate_out.py --new "$out" "${backups:-5}"
    : >>"$out"
    offset=1
    # The sink keeps none of this script's own output open (a caller waits for it to close).
    exec {sink}> >(exec "$(maie_python)" scripts/lib/rotate_out.py "$out" "${max_bytes:-10000000}" "${backups:-5}" \
        >/dev/null 2>&1)
    sink_pid=$!
    printf '==== %s starting: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >&"$sink"
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >&"$sink" 2>&1 &
    else
        nohup "$@" </dev/null >&"$sink" 2>&1 &
    fi
    pid=$!
    # Only the process holds the pipe now: the sink ends when it does.
    exec {sink}>&-
    write_pidfile "$name" "$pid"
    while ((waited < timeout * 2)); do
        if ! proc_alive "$pid"; then
            wait_sink "$sink_pid"
            echo "error: $name exited during start-up; the last lines of $out:" >&2
            tail -c "+$offset" "$out" | tail -n 40 >&2
            rm -f "$RUN_DIR/$name.pid"
            return 1
        fi
        if "$ready" "$pid" "$out" "$offset"; then
            echo "$name started: pid $pid ($RUN_DIR/$name.pid), output in $out"
            return 0
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    echo "error: $name was not ready within $timeout s; stopping it. The last lines of $out:" >&2
    tail -c "+$offset" "$out" | tail -n 40 >&2
    stop_pid "$pid" 10
    rm -f "$RUN_DIR/$name.pid"
    return 1
}
