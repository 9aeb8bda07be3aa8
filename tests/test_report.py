"""report.md: the summary columns and the per-family tables."""

from __future__ import annotations

import json

import pytest

from drirl.errors import DrirlError
from drirl.report import markdown_report, rebuild_report


def _metric(value: float) -> dict:
    return {"value": value, "n": 4, "ci_low": None, "ci_high": None}


def _document(metrics: dict[str, float]) -> dict:
    cell = {
        "id": "base",
        "settings": {},
        "training": {},
        "stages": {},
        "seconds": 1.0,
        "metrics": {name: _metric(value) for name, value in metrics.items()},
    }
    return {"experiment": "report", "file": None, "created": "", "cells": [cell]}


def _summary_header(text: str) -> str:
    lines = text.splitlines()
    return lines[lines.index("## Summary") + 2]


def test_summary_adds_present_usefulness_metrics():
    text = markdown_report(
        _document({"harmful_refusal/all": 0.5, "mc_qa/accuracy": 0.52})
    )
    assert "mc_qa accuracy" in _summary_header(text)


def test_summary_leaves_out_absent_metrics():
    text = markdown_report(_document({"harmful_refusal/all": 0.5}))
    assert "jailbreak refusal" not in _summary_header(text)


def test_jailbreak_templates_get_own_table():
    text = markdown_report(
        _document(
            {
                "jailbreak_refusal/all": 0.2,
                "jailbreak_refusal/role_play": 0.1,
                "jailbreak_refusal/hypothetical": 0.3,
            }
        )
    )
    assert "## Refusal rate on jailbreak-wrapped harmful prompts, per template" in text
    assert "| cell | hypothetical | role_play |" in text


def test_summary_metrics_not_repeated_in_other():
    text = markdown_report(_document({"helpfulness/quality": 0.6, "custom/score": 0.4}))
    other = text.split("## Other metrics", 1)[1]
    assert "custom/score" in other
    assert "helpfulness/quality" not in other


def test_rebuild_from_finished_cells(tmp_path):
    cell = _document({"harmful_refusal/all": 0.25})["cells"][0]
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "base.json").write_text(json.dumps(cell), encoding="utf-8")
    folder = rebuild_report(tmp_path)
    text = (folder / "report.md").read_text(encoding="utf-8")
    assert "| base | 0.25 (n=4) |" in text


def test_rebuild_without_cells_names_folder(tmp_path):
    with pytest.raises(DrirlError, match="no finished cell"):
        rebuild_report(tmp_path)
