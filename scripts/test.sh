#!/usr/bin/env bash
# Install MAIE with its test tools into .venv and run the whole test suite:
#   unit · integration (real Redis + real worker processes, speech from espeak-ng) · engine (real vLLM on CPU),
# then the integration tests marked `broker` a second time with RabbitMQ as the broker
# (MAIE_TEST_BROKER=amqp; RabbitMQ on 127.0.0.1:5672, a virtual host per session via rabbitmqctl).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not engine"` or `scripts/test.sh -x`;
# with extra arguments the RabbitMQ pass runs only if MAIE_TEST_BROKERS names amqp
# (MAIE_TEST_BROKERS="redis amqp" is the default without arguments; "redis" skips it).
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

if [ $# -eq 0 ]; then
    BROKERS=${MAIE_TEST_BROKERS:-redis amqp}
else
    BROKERS=${MAIE_TEST_BROKERS:-redis}
fi

echo "==> running tests"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
"$VENV/bin/python" -m pytest "$@" || status=$?

case " $BROKERS " in
*" amqp "*)
    if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
        echo "error: RabbitMQ is not answering on 127.0.0.1:5672 (MAIE_TEST_BROKERS=redis skips this pass)" >&2
        exit 1
    fi
    echo "==> the broker tests again, on RabbitMQ"
    MAIE_TEST_BROKER=amqp "$VENV/bin/python" -m pytest -m broker tests/integration || status=$?
    ;;
esac
exit "$status"
