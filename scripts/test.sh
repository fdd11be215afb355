#!/usr/bin/env bash
# Install MAIE with its test tools into .venv and run the whole test suite:
#   unit · integration (real Redis + real worker processes, speech from espeak-ng) · engine (real vLLM on CPU).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not engine"` or `scripts/test.sh -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${MAIE_TEST_EXTRAS:-dev,cpu,asr}

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck source=/dev/null
. scripts/lib/install.sh
install_maie "$VENV" "$EXTRAS"

# Redis on 127.0.0.1:6379: the broker and result backend the tests use (a DB index of their own).
. scripts/lib/redis.sh
ensure_redis
# espeak-ng: the audio tests speak known sentences to make their recordings.
. scripts/lib/espeak.sh
ensure_espeak

echo "==> running tests"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" -m pytest "$@"
