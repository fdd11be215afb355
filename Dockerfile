# The MAIE worker image (also runs Flower and the CLI).
#
#   docker build --build-arg VARIANT=gpu    -t maie-worker:gpu .     # vLLM with CUDA: local_vllm on a GPU
#   docker build --build-arg VARIANT=cpu    -t maie-worker:cpu .     # vLLM's CPU build: local_vllm on CPU
#   docker build --build-arg VARIANT=server -t maie-worker:server .  # no vLLM: vllm_server workers, Flower, API
#   docker build --build-arg VARIANT=asr     -t maie-worker:asr .     # speech recognition on CPU
#   docker build --build-arg VARIANT=asr-gpu -t maie-worker:asr-gpu . # speech recognition with CUDA 12
#
# VARIANT picks the extra: gpu -> .[gpu], cpu -> .[cpu] (torch from PyTorch's CPU wheel index;
# torchvision/torchaudio/torchcodec removed, they do not match that torch), server -> .[audio] (PyAV:
# the API and the CLI probe recordings before queueing them), asr / asr-gpu -> .[asr] (faster-whisper;
# asr-gpu adds the CUDA 12 cuBLAS and cuDNN 9 wheels CTranslate2 loads).
# The container runs scripts/start-worker.sh enhance|summary (compose.yaml and compose.cpu.yaml set
# the command).
# MAIE itself is installed as a wheel would be (not editable): the built-in templates are package data.
FROM python:3.11-slim

ARG VARIANT=gpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# vLLM's CPU build links the system's libnuma.so.1 (its _C.abi3.so) and compiles kernels with g++
# when the engine starts; the other variants need neither.
RUN set -eux; \
    if [ "$VARIANT" = cpu ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends libnuma1 g++; \
        rm -rf /var/lib/apt/lists/*; \
    fi

# The heavy layer (vLLM, torch) depends on pyproject.toml only: a placeholder package lets pip
# resolve the extra, so editing maie/, scripts or pool files never reinstalls it.
COPY pyproject.toml README.md /src/
RUN set -eux; \
    mkdir -p /src/maie && touch /src/maie/__init__.py; \
    case "$VARIANT" in \
        gpu) pip install "/src[gpu]" ;; \
        cpu) pip install "/src[cpu]" --extra-index-url "$TORCH_CPU_INDEX"; \
             pip uninstall -y torchvision torchaudio torchcodec || true ;; \
        server) pip install "/src[audio]" ;; \
        asr) pip install "/src[asr]" ;; \
        asr-gpu) pip install "/src[asr]" nvidia-cublas-cu12 "nvidia-cudnn-cu12==9.*" ;; \
        *) echo "VARIANT must be gpu, cpu, server, asr or asr-gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    pip uninstall -y maie; \
    rm -rf /src/maie /src/build /src/*.egg-info

COPY maie/ /src/maie/
RUN pip install --no-deps /src && rm -rf /src

WORKDIR /app
COPY workers/ workers/
COPY scripts/ scripts/

RUN useradd --create-home --uid 1000 maie \
    && mkdir -p logs run models \
    && chown maie:maie logs run
USER maie

CMD ["scripts/start-worker.sh", "enhance"]
