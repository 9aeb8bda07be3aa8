"""The command line contract: validate exit codes and messages, report rebuilding."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from drirl.cli import main
from drirl.components import Metric
from drirl.pipeline import CellResult
from drirl.report import results_document, write_report


def test_validate_quickstart_exits_zero(capsys):
    assert main(["validate", "examples/quickstart.yaml"]) == 0
    assert "3 cell(s)" in capsys.readouterr().out


def test_validate_invalid_exits_nonzero(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"scaler": "clip*rewardgap", "optimizer": "grpo_s"}))
    assert main(["validate", str(path)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error
    assert "field 'scaler'" in error
    assert "'rewardgap'" in error
    assert "reward_gap" in error


def test_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "experiment file not found" in capsys.readouterr().err


def test_report_rebuilt_from_results(tmp_path, capsys):
    cells = [
        CellResult(
            "base",
            {"optimizer": "none"},
            {"harmful_refusal/all": Metric(0.25, 8, 0.0, 0.5)},
        ),
        CellResult(
            "grpo",
            {"optimizer": "grpo"},
            {"harmful_refusal/all": Metric(0.75, 8, 0.5, 1.0)},
        ),
    ]
    write_report(tmp_path, results_document("demo", None, cells))
    (tmp_path / "report" / "report.md").unlink()
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "**0.75 [0.50, 1.00] (n=8)**" in report
    assert "| base | 0.25 [0.00, 0.50] (n=8)" in report


def test_results_json_contract(tmp_path):
    cells = [
        CellResult("base", {"optimizer": "none"}, {"m": Metric(0.5, 4, 0.25, 0.75)})
    ]
    folder = write_report(tmp_path, results_document("demo", "x.yaml", cells))
    document = json.loads((folder / "results.json").read_text())
    cell = document["cells"][0]
    assert cell["id"] == "base"
    assert cell["settings"] == {"optimizer": "none"}
    assert cell["metrics"]["m"] == {
        "value": 0.5,
        "n": 4,
        "ci_low": 0.25,
        "ci_high": 0.75,
    }
    assert (
        Path(folder / "results.csv").read_text().splitlines()[1]
        == "base,m,0.5,4,0.25,0.75"
    )


def test_report_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "results.json not found" in error
