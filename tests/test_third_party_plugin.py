"""A third-party package adds an eighth harm category through the `drirl` entry point.

The package under tests/third_party_plugin is installed into a temporary folder (not into the
project's environment) and put on PYTHONPATH of a `drirl` subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def drirl(args: list[str], env: dict[str, str], cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "drirl.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_plugins_json_lists_eighth_category(plugin_env):
    result = drirl(["plugins", "--json"], plugin_env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    categories = [r for r in rows if r["kind"] == "harm_category"]
    assert len(categories) == 8
    extra = [r for r in categories if r["name"] == "misinformation"]
    assert extra == [
        {
            "kind": "harm_category",
            "name": "misinformation",
            "plugin": "example_category",
            "version": "0.2.0",
        }
    ]


def test_plugins_json_keys(plugin_env):
    rows = json.loads(drirl(["plugins", "--json"], plugin_env).stdout)
    kinds = {r["kind"] for r in rows}
    assert kinds == {
        "harm_category",
        "reward_learner",
        "difficulty_scaler",
        "optimizer",
        "judge",
        "benchmark",
        "generator",
    }
    assert all(set(r) == {"kind", "name", "plugin", "version"} for r in rows)


@pytest.mark.slow
def test_run_with_eighth_category(plugin_env, tmp_path):
    experiment = tmp_path / "misinformation.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "third-party category",
                "categories": ["misinformation"],
                "baselines": ["base"],
                "evaluation": {"settings": {"max_new_tokens": 16}},
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "run"
    result = drirl(["run", str(experiment), "--out", str(out), "--quiet"], plugin_env)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((out / "report" / "results.json").read_text())
    metrics = document["cells"][0]["metrics"]
    assert metrics["harmful_refusal/misinformation"]["n"] == 2
    assert metrics["benign_compliance/misinformation"]["n"] == 1
