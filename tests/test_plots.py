"""The report's PNG plots, drawn from a results document and saved training logs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest

from drirl.report import rebuild_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metric(value: float, n: int = 4) -> dict:
    return {"value": value, "n": n, "ci_low": max(0.0, value - 0.2), "ci_high": 1.0}


def _document(trained_stage: str | None) -> dict:
    base = {
        "id": "base",
        "settings": {},
        "training": {},
        "stages": {},
        "seconds": 1.0,
        "metrics": {
            "harmful_refusal/all": _metric(0.1),
            "harmful_refusal/insult": _metric(0.0),
            "harmful_refusal/mental_health": _metric(0.25),
            "benign_compliance/all": _metric(0.9),
        },
    }
    trained = {
        "id": "grpo_s",
        "settings": {"optimizer": "grpo_s"},
        "training": {},
        "stages": {"optimize": trained_stage} if trained_stage else {},
        "seconds": 2.0,
        "metrics": {
            "harmful_refusal/all": _metric(0.6),
            "harmful_refusal/insult": _metric(0.5),
            "harmful_refusal/mental_health": _metric(0.75),
            "benign_compliance/all": _metric(0.8),
        },
    }
    return {
        "experiment": "plots",
        "file": None,
        "created": "",
        "cells": [base, trained],
    }


def _history(folder: Path) -> None:
    rows = [
        {
            "step": step,
            "reward": -1.0 + 0.2 * step,
            "kl": 0.01 * step,
            "alpha/mean": 1.0,
            "alpha/min": 0.5,
            "alpha/max": 1.5,
            "frac_groups_zero_spread": 0.0,
        }
        for step in range(1, 5)
    ]
    rows.append({"step": 4, "train_runtime": 10.0})
    folder.mkdir(parents=True)
    (folder / "log_history.json").write_text(json.dumps(rows), encoding="utf-8")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    _history(tmp_path / "stages" / "optimize" / "abc")
    write_report(tmp_path, _document("stages/optimize/abc"))
    return tmp_path


@pytest.mark.parametrize(
    "name", ["category_refusal.png", "safety_vs_usefulness.png", "training_curves.png"]
)
def test_plot_is_png(run_dir: Path, name: str) -> None:
    assert (run_dir / "report" / name).read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    "name", ["category_refusal.png", "safety_vs_usefulness.png", "training_curves.png"]
)
def test_plot_is_not_blank(run_dir: Path, name: str) -> None:
    pixels = matplotlib.image.imread(run_dir / "report" / name)
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05


def test_report_links_plots(run_dir: Path) -> None:
    text = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "![training_curves](training_curves.png)" in text


def test_training_curves_skipped_without_training(tmp_path: Path) -> None:
    write_report(tmp_path, _document(None))
    assert not (tmp_path / "report" / "training_curves.png").exists()


def test_category_plot_skipped_without_categories(tmp_path: Path) -> None:
    document = _document(None)
    for cell in document["cells"]:
        cell["metrics"] = {
            k: v for k, v in cell["metrics"].items() if k.endswith("/all")
        }
    write_report(tmp_path, document)
    assert not (tmp_path / "report" / "category_refusal.png").exists()


def test_rebuild_redraws_plots(run_dir: Path) -> None:
    plot = run_dir / "report" / "training_curves.png"
    plot.unlink()
    rebuild_report(run_dir)
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
