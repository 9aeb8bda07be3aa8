"""The ``warm_start`` field: validation, and a real run whose optimizer starts from it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from drirl.config import load_experiment
from drirl.errors import ConfigError
from drirl.pipeline import ExperimentRunner
from drirl.plugins.optimizers.sft import SFTSettings
from drirl.warm_start import WarmStart


def experiment(**fields):
    base = {"categories": ["insult"], "optimizer": "sft", "training": {"steps": 1}}
    base.update(fields)
    return base


def only_cell(plugins, **fields):
    return load_experiment(experiment(**fields), plugins, file="exp.yaml").cells[0]


def test_default_is_no_warm_start(plugins):
    assert only_cell(plugins).warm_start is None


def test_sft_is_the_default_optimizer(plugins):
    cell = only_cell(plugins, warm_start={"settings": {"steps": 3}})
    assert cell.warm_start == WarmStart("sft", SFTSettings(steps=3))


def test_base_preset_clears_warm_start(plugins):
    raw = experiment(warm_start={"settings": {"steps": 3}}, baselines=["base", "sft"])
    cells = load_experiment(raw, plugins, file="exp.yaml").cells
    by_id = {cell.id: cell for cell in cells}
    assert by_id["base"].warm_start is None
    assert by_id["sft"].warm_start == WarmStart("sft", SFTSettings(steps=3))


def test_no_optimizer_keeps_warm_start(plugins):
    cell = only_cell(plugins, optimizer="none", warm_start={"settings": {"steps": 3}})
    assert not cell.trains
    assert cell.warm_start == WarmStart("sft", SFTSettings(steps=3))


@pytest.mark.parametrize(
    ("value", "field_path", "words"),
    [
        ("sft", "warm_start", "must be a mapping"),
        ({"optimiser": "sft"}, "warm_start.optimiser", "unknown field"),
        ({"optimizer": "sfft"}, "warm_start.optimizer", "unknown optimizer"),
        ({"optimizer": "grpo"}, "warm_start.optimizer", "needs a reward model"),
        ({"settings": {"step": 3}}, "warm_start.settings.step", "unknown setting"),
        ({"settings": {"steps": 0}}, "warm_start.settings", "steps"),
    ],
)
def test_bad_warm_start_names_field(plugins, value, field_path, words):
    with pytest.raises(ConfigError) as error:
        only_cell(plugins, warm_start=value)
    message = str(error.value)
    assert f"field '{field_path}" in message
    assert words in message
    assert "exp.yaml" in message


@pytest.mark.slow
def test_optimizer_starts_from_warm_start(plugins, embedded_policy, tmp_path):
    """Two cells share one warm-start stage, and each optimizer trains from its weights."""
    raw = experiment(
        data={"train_per_category": 1, "eval_per_category": 1},
        training={"steps": 1, "batch_size": 2, "learning_rate": 1e-4},
        warm_start={"settings": {"steps": 1, "batch_size": 2, "learning_rate": 1e-3}},
        evaluation={"benchmarks": ["harmful_refusal"], "settings": {"max_new_tokens": 4}},
        matrix={
            "training.learning_rate": [1e-4, 0.0001001],
            "include": [{"id": "warm-only", "optimizer": "none"}],
        },
    )
    loaded = load_experiment(raw, plugins, file="exp.yaml")
    results = ExperimentRunner(loaded, plugins, tmp_path, show_progress=False).run()
    warm_folders = {result.stages["warm_start"] for result in results}
    assert len(warm_folders) == 1
    warm_dir = tmp_path / warm_folders.pop()
    warm = load_file(warm_dir / "model" / "model.safetensors")
    embedded = load_file(embedded_policy / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    # An AdamW step moves each weight by about the learning rate: 1e-3 for the warm start,
    # 1e-4 for the cells' own step.
    assert (warm[name] - embedded[name]).abs().max() > 5e-4

    by_id = {result.id: result for result in results}
    warm_only = by_id.pop("warm-only")
    assert "optimize" not in warm_only.stages
    evaluated = tmp_path / warm_only.stages["evaluate/harmful_refusal"] / "stage.json"
    assert json.loads(evaluated.read_text())["inputs"]["model"].startswith("warm_start-")
    assert len(by_id) == 2
    for result in by_id.values():
        optimize_dir = tmp_path / result.stages["optimize"]
        inputs = json.loads((optimize_dir / "stage.json").read_text())["inputs"]
        assert inputs["policy"].startswith("warm_start-")
        trained = load_file(optimize_dir / "model" / "model.safetensors")
        moved = (trained[name] - warm[name]).abs().max()
        assert 0 < moved < 5e-4
