"""Evaluating the policies saved during training (``evaluation.checkpoint_every``).

One tiny `drirl run` on the embedded model: two GRPO-S cells that differ only in
``checkpoint_every`` (null and 1), two steps each, one harmful and one benign prompt for
training and for evaluation. Every stage is real (TRL RewardTrainer and GRPOTrainer,
lm-eval generation).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from drirl.checkpoints import (
    CHECKPOINTS_DIR,
    collect_trainer_checkpoints,
    list_checkpoints,
    wants_checkpoint,
)
from drirl.cli import main
from drirl.components import RunContext
from drirl.plugins.optimizers.dpo_data import DPOSettings
from drirl.plugins.optimizers.dpo_run import build_dpo_config
from drirl.plugins.optimizers.grpo_data import GRPOSettings
from drirl.plugins.optimizers.grpo_run import build_config
from drirl.plugins.optimizers.sft import SFTSettings, build_sft_config

EXPERIMENT = {
    "name": "checkpoints",
    "categories": ["insult"],
    "data": {"train_per_category": 1, "eval_per_category": 1},
    "reward": {"learner": "bradley_terry", "settings": {"max_new_tokens": 16}},
    "optimizer": "grpo_s",
    "scaler": "clip",
    "training": {
        "steps": 2,
        "batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 12,
    },
    "evaluation": {"settings": {"max_new_tokens": 12}},
    "matrix": {
        "include": [
            {"id": "final-only"},
            {"id": "every-step", "evaluation.checkpoint_every": 1},
        ]
    },
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    experiment = folder / "checkpoints.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
    out = folder / "run"
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 0
    return out


def _cell(out, cell_id):
    return json.loads((out / "cells" / f"{cell_id}.json").read_text())


@pytest.mark.slow
def test_rows_for_each_step(run):
    rows = _cell(run, "every-step")["training"]["checkpoints"]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["metrics"]["harmful_refusal/all"]["n"] == 1
        assert row["metrics"]["benign_compliance/all"]["n"] == 1


@pytest.mark.slow
def test_last_row_is_final_policy(run):
    cell = _cell(run, "every-step")
    last = cell["training"]["checkpoints"][-1]["metrics"]
    for name in ("harmful_refusal/all", "benign_compliance/all"):
        assert last[name] == cell["metrics"][name]


@pytest.mark.slow
def test_saved_policy_evaluated_separately(run):
    cell = _cell(run, "every-step")
    for name in ("harmful_refusal", "over_refusal"):
        saved = cell["stages"][f"evaluate/{name}/step-1"]
        assert saved != cell["stages"][f"evaluate/{name}"]
        record = json.loads((run / saved / "stage.json").read_text())
        assert record["inputs"]["model"].endswith("/step-1")


@pytest.mark.slow
def test_saving_keeps_final_policy(run):
    """Saving every step leaves training as it was: the final weights are identical."""
    plain = _cell(run, "final-only")["stages"]["optimize"]
    saving = _cell(run, "every-step")["stages"]["optimize"]
    assert plain != saving
    before = load_file(run / plain / "model" / "model.safetensors")
    after = load_file(run / saving / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    different = [k for k in before if not torch.equal(before[k], after[k])]
    assert different == []


@pytest.mark.slow
def test_saved_policy_differs_from_final(run):
    optimize = run / _cell(run, "every-step")["stages"]["optimize"]
    saved = list_checkpoints(optimize)
    assert [step for step, _ in saved] == [1]
    first = load_file(saved[0][1] / "model.safetensors")
    final = load_file(optimize / "model" / "model.safetensors")
    assert any(not torch.equal(first[k], final[k]) for k in final)


@pytest.mark.slow
def test_trainer_folder_left_empty(run):
    optimize = run / _cell(run, "every-step")["stages"]["optimize"]
    assert list((optimize / "trainer").glob("checkpoint-*")) == []
    assert (optimize / CHECKPOINTS_DIR / "step-1" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_key_changes_only_when_set(run):
    plain = _cell(run, "final-only")["stages"]["optimize"]
    saving = _cell(run, "every-step")["stages"]["optimize"]
    plain_inputs = json.loads((run / plain / "stage.json").read_text())["inputs"]
    saving_inputs = json.loads((run / saving / "stage.json").read_text())["inputs"]
    assert "checkpoint_every" not in plain_inputs
    assert saving_inputs["checkpoint_every"] == 1


@pytest.mark.slow
def test_report_shows_saved_rates(run):
    report = (run / "report" / "report.md").read_text()
    section = report.split("## Evaluation during training")[1].split("\n## ")[0]
    assert "| every-step | 1 | " in section
    assert "| every-step | 2 | " in section
    assert "(n=1)" in section
    assert "final-only" not in section
    assert (run / "report" / "checkpoint_curves.png").is_file()


# The Trainer configs: weights alone, every N steps, only when asked.

CONFIG_BUILDERS = [
    (build_config, GRPOSettings()),
    (build_dpo_config, DPOSettings()),
    (build_sft_config, SFTSettings()),
]


@pytest.mark.parametrize(("build", "settings"), CONFIG_BUILDERS)
def test_config_saves_every_n_steps(tmp_path, build, settings):
    config = build(settings, tmp_path, RunContext(checkpoint_every=5))
    assert config.save_strategy == "steps"
    assert config.save_steps == 5
    assert config.save_only_model


@pytest.mark.parametrize(("build", "settings"), CONFIG_BUILDERS)
def test_config_saves_nothing_by_default(tmp_path, build, settings):
    assert build(settings, tmp_path, RunContext()).save_strategy == "no"


# The folder helpers, on folders made by hand.


def test_wants_checkpoint_skips_last_step():
    saved = [step for step in range(1, 11) if wants_checkpoint(step, 4, 10)]
    assert saved == [4, 8]
    assert not wants_checkpoint(8, None, 10)
    assert not wants_checkpoint(10, 5, 10)


def test_collect_moves_trainer_folders(tmp_path):
    trainer = tmp_path / "trainer"
    for step in (5, 10, 15):
        folder = trainer / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "trainer_state.json").write_text("{}")
    moved = collect_trainer_checkpoints(trainer, tmp_path, last_step=15)
    assert [p.name for p in moved] == ["step-5", "step-10"]
    assert list(trainer.iterdir()) == []
    assert (tmp_path / CHECKPOINTS_DIR / "step-10" / "model.safetensors").is_file()
    assert not (tmp_path / CHECKPOINTS_DIR / "step-10" / "trainer_state.json").exists()


def test_list_skips_unfinished_folders(tmp_path):
    root = tmp_path / CHECKPOINTS_DIR
    for name in ("step-20", "step-3", "step-7.tmp-abc", "notes"):
        (root / name).mkdir(parents=True)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 20]


def test_list_without_folder_is_empty(tmp_path):
    assert list_checkpoints(tmp_path) == []
