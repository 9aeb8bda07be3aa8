"""`drirl run` with the ``dpo`` preset on one category of the embedded model.

Every stage is real (policy sampling, TRL DPOTrainer, lm-eval generation) but tiny: one
harmful and one benign prompt for training and for evaluation, one DPO step of two pairs.
DPO trains no reward model, so the cell must have no reward stage.
"""

from __future__ import annotations

import json

import pytest
import yaml

from drirl.cli import main

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "name": "tiny_dpo",
    "categories": ["insult"],
    "data": {"train_per_category": 1, "eval_per_category": 1},
    "training": {"steps": 1, "batch_size": 2, "max_completion_length": 12},
    "evaluation": {"settings": {"max_new_tokens": 12}},
    "baselines": ["dpo"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_dpo")
    experiment = folder / "tiny_dpo.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
    out = folder / "run"
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 0
    return out


def test_dpo_cell_has_no_reward_stage(run):
    document = json.loads((run / "report" / "results.json").read_text())
    cell = document["cells"][0]
    assert cell["id"] == "dpo"
    assert "reward" not in cell["stages"]
    assert "optimize" in cell["stages"]


def test_dpo_cell_logs_loss(run):
    document = json.loads((run / "report" / "results.json").read_text())
    history_file = run / document["cells"][0]["stages"]["optimize"] / "log_history.json"
    history = json.loads(history_file.read_text())
    assert any("loss" in row for row in history)


def test_dpo_cell_metrics_have_counts(run):
    document = json.loads((run / "report" / "results.json").read_text())
    metrics = document["cells"][0]["metrics"]
    assert metrics["harmful_refusal/insult"]["n"] == 1
    assert metrics["benign_compliance/insult"]["n"] == 1
