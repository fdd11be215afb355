# Makes sure Redis answers on 127.0.0.1:6379, starting redis-server when it is installed.
ensure_redis() {
    local host=${REDIS_HOST:-127.0.0.1} port=${REDIS_PORT:-6379}
    if redis_ping "$host" "$port"; then
        return 0
    fi
    if command -v redis-server >/dev/null 2>&1; then
        echo "==> starting redis-server on $host:$port (no persistence)"
        redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
            --logfile "${TMPDIR:-/tmp}/maie-redis.log" >/dev/null
        for _ in $(seq 50); do
            redis_ping "$host" "$port" && return 0
            sleep 0.1
        done
    fi
    echo "error: Redis is not answering on $host:$port and redis-server is not installed." >&2
    echo "       Install it (apt-get install redis-server, brew install redis) or start one:" >&2
    echo "       docker run -d -p 6379:6379 redis:7" >&2
    return 1
}

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h "$1" -p "$2" ping >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/$1/$2" && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null
    fi
}
