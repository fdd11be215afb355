"""Engine tier: real vLLM on CPU with a tiny random model built on the spot (no model hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may ever be fetched from a model hub, whatever a test asks vLLM to load.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 model with a ChatML template, built once per session (seconds)."""
    from maie.devmodel import build_tiny_model

    model_dir = tmp_path_factory.mktemp("models") / "tiny-qwen2"
    build_tiny_model(model_dir)
    return model_dir
