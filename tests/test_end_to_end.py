"""`drirl run` end to end on the embedded model: base, grpo and grpo_s on one category.

Every stage is real (TRL RewardTrainer and GRPOTrainer, lm-eval generation) but tiny: one
harmful and one benign prompt for training and for evaluation, one GRPO step of four
completions. A second run of the same experiment must reuse every stage, and a run over
``optimizer_seed`` must reuse the reward stages and retrain only the seeded policy.
"""

from __future__ import annotations

import json

import pytest
import yaml

from drirl.cli import main

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "name": "tiny",
    "categories": ["insult"],
    "data": {"train_per_category": 1, "eval_per_category": 1},
    "reward": {"learner": "bradley_terry", "settings": {"max_new_tokens": 16}},
    "training": {
        "steps": 1,
        "batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 12,
    },
    "evaluation": {"settings": {"max_new_tokens": 12}},
    "baselines": ["base", "grpo", "grpo_s"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    experiment = folder / "tiny.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
    out = folder / "run"
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 0
    return experiment, out


def test_results_have_three_cells(run):
    _, out = run
    document = json.loads((out / "report" / "results.json").read_text())
    assert [cell["id"] for cell in document["cells"]] == ["base", "grpo", "grpo_s"]


def test_results_metrics_have_counts(run):
    _, out = run
    document = json.loads((out / "report" / "results.json").read_text())
    for cell in document["cells"]:
        assert cell["metrics"]["harmful_refusal/insult"]["n"] == 1, cell["id"]
        assert cell["metrics"]["benign_compliance/insult"]["n"] == 1, cell["id"]


def test_grpo_s_logs_alpha_statistics(run):
    _, out = run
    document = json.loads((out / "report" / "results.json").read_text())
    grpo_s = document["cells"][2]
    history_file = out / grpo_s["stages"]["optimize"] / "log_history.json"
    history = json.loads(history_file.read_text())
    assert any("alpha/mean" in row for row in history)


def test_reward_model_shared(run):
    _, out = run
    assert len(list((out / "stages" / "reward").iterdir())) == 1


def test_report_markdown_written(run):
    _, out = run
    assert "| grpo_s |" in (out / "report" / "report.md").read_text()


def test_rerun_reuses_every_stage(run):
    experiment, out = run
    log_file = out / "run.log"
    before = log_file.stat().st_size
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 0
    second_run = log_file.read_text(encoding="utf-8")[before:]
    # base: 2 evaluations; grpo and grpo_s: reward, reward_eval, optimize and 2
    # evaluations each.
    assert second_run.count(": reusing ") == 12
    assert " trained" not in second_run


@pytest.fixture(scope="module")
def seeded_run(run, tmp_path_factory):
    """Run the grpo cell again with ``optimizer_seed`` 0 and 1, in a new run folder.

    Every stage folder of the first run is linked in, so that run's stages are reused.
    Return both run folders and the number of optimize folders before the seeded run.
    """
    _, first = run
    folder = tmp_path_factory.mktemp("seeded")
    experiment = folder / "seeded.yaml"
    seeded = {
        **EXPERIMENT,
        "optimizer": "grpo",
        "baselines": [],
        "matrix": {"optimizer_seed": [0, 1]},
    }
    experiment.write_text(yaml.safe_dump(seeded), encoding="utf-8")
    out = folder / "run"
    (out / "stages").mkdir(parents=True)
    for stage in (first / "stages").iterdir():
        (out / "stages" / stage.name).symlink_to(stage)
    trained_before = len(list((first / "stages" / "optimize").iterdir()))
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 0
    return first, out, trained_before


def test_optimizer_seed_equal_reuses_policy(seeded_run):
    first, out, _ = seeded_run
    unseeded = json.loads((first / "cells" / "grpo.json").read_text())
    cell = json.loads((out / "cells" / "0.json").read_text())
    assert cell["stages"]["optimize"] == unseeded["stages"]["optimize"]


def test_optimizer_seed_retrains_policy_only(seeded_run):
    first, out, trained_before = seeded_run
    unseeded = json.loads((first / "cells" / "grpo.json").read_text())
    cell = json.loads((out / "cells" / "1.json").read_text())
    assert cell["stages"]["reward"] == unseeded["stages"]["reward"]
    assert cell["stages"]["optimize"] != unseeded["stages"]["optimize"]
    record = json.loads((out / cell["stages"]["optimize"] / "stage.json").read_text())
    assert record["inputs"]["seed"] == 0
    assert record["inputs"]["optimizer_seed"] == 1
    # Only the seed-1 policy was trained: one optimize folder more than before.
    optimize = first / "stages" / "optimize"
    assert len(list(optimize.iterdir())) == trained_before + 1
