"""A built wheel ships registry.yaml and the data, and imports like the editable install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        cwd=out,
    )
    return next(out.glob("drirl-*.whl"))


def test_wheel_ships_registry_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "drirl/registry.yaml" in names
    assert "drirl/plugins/harm_categories/data/insult.jsonl" in names
    assert "drirl/plugins/scalers/clip.py" in names


def test_wheel_lists_same_plugins(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import drirl, json; print(json.dumps(drirl.__file__))"
    location = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(location.stdout).startswith(str(target))
    listed = subprocess.run(
        [sys.executable, "-m", "drirl.cli", "plugins", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    editable = subprocess.run(
        [sys.executable, "-m", "drirl.cli", "plugins", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listed.stdout) == json.loads(editable.stdout)
