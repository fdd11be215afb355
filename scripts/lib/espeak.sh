# Makes sure espeak-ng is installed: the audio tests and the ASR benchmark make their speech with it.
# Installs the Debian package when apt-get is there and we may use it (root), as redis.sh starts Redis.
ensure_espeak() {
    if command -v espeak-ng >/dev/null 2>&1; then
        return 0
    fi
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        echo "==> installing espeak-ng (speech for the audio tests)"
        if apt-get install -y -qq espeak-ng >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq espeak-ng >/dev/null 2>&1; }; then
            return 0
        fi
    fi
    echo "error: espeak-ng is not installed and could not be installed here." >&2
    echo "       Install it (apt-get install espeak-ng, brew install espeak-ng) to run the audio tests." >&2
    return 1
}
