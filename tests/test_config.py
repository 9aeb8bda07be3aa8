"""Experiment files: defaults, matrix expansion, baselines and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drirl.config import load_experiment
from drirl.errors import ConfigError
from drirl.matrix import expand_matrix


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_matrix_product_order():
    cells = expand_matrix({"optimizer": ["grpo", "grpo_s"], "seed": [0, 1]}, [], {})
    assert [c.settings for c in cells] == [
        {"optimizer": "grpo", "seed": 0},
        {"optimizer": "grpo", "seed": 1},
        {"optimizer": "grpo_s", "seed": 0},
        {"optimizer": "grpo_s", "seed": 1},
    ]


def test_matrix_exclude_removes_match():
    matrix = {"optimizer": ["grpo", "grpo_s"], "seed": [0, 1], "exclude": [{"seed": 1}]}
    cells = expand_matrix(matrix, [], {})
    assert [c.id for c in cells] == ["grpo-0", "grpo_s-0"]


def test_matrix_exclude_matching_nothing():
    matrix = {"optimizer": ["grpo"], "exclude": [{"optimizer": "dpo"}]}
    with pytest.raises(ConfigError, match=r"matrix.exclude\[0\]"):
        expand_matrix(matrix, [], {})


def test_matrix_include_adds_named_cell():
    matrix = {"include": [{"id": "mine", "optimizer": "grpo_s", "scaler": "clip"}]}
    cells = expand_matrix(matrix, [], {})
    assert cells[0].id == "mine"
    assert cells[0].settings == {"optimizer": "grpo_s", "scaler": "clip"}


def test_baseline_crossed_with_free_axes():
    presets = {"base": {"optimizer": "none"}}
    cells = expand_matrix({"optimizer": ["grpo"], "seed": [0, 1]}, ["base"], presets)
    assert [c.id for c in cells] == ["base-0", "base-1", "grpo-0", "grpo-1"]


def test_quickstart_has_three_cells(plugins):
    experiment = load_experiment(Path("examples/quickstart.yaml"), plugins)
    assert [c.id for c in experiment.cells] == ["base", "grpo", "grpo_s"]


def test_quickstart_grpo_s_scalers(plugins):
    experiment = load_experiment(Path("examples/quickstart.yaml"), plugins)
    assert experiment.cells[2].scaler_names == ["clip", "reward_gap"]


def test_unknown_top_level_field(tmp_path, plugins):
    path = write(tmp_path, {"optimiser": "grpo"})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert str(path) in message
    assert "field 'optimiser'" in message
    assert "allowed:" in message
    assert "optimizer" in message


def test_unknown_optimizer_in_matrix(tmp_path, plugins):
    path = write(tmp_path, {"matrix": {"optimizer": ["grpo", "grpoo"]}})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "matrix.optimizer[1]" in message
    assert "'grpoo'" in message
    assert "grpo_s" in message


def test_wrong_type_training_setting(tmp_path, plugins):
    path = write(tmp_path, {"optimizer": "grpo", "training": {"steps": "many"}})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "training.steps" in message
    assert "'many'" in message


def test_optimizer_seed_defaults_to_none(tmp_path, plugins):
    experiment = load_experiment(write(tmp_path, {"seed": 3}), plugins)
    assert [(c.seed, c.optimizer_seed) for c in experiment.cells] == [(3, None)]


def test_optimizer_seed_matrix(tmp_path, plugins):
    path = write(tmp_path, {"matrix": {"optimizer_seed": [1, 2]}})
    experiment = load_experiment(path, plugins)
    assert [(c.seed, c.optimizer_seed) for c in experiment.cells] == [(0, 1), (0, 2)]


def test_optimizer_seed_wrong_type(tmp_path, plugins):
    path = write(tmp_path, {"matrix": {"optimizer_seed": [1, "two"]}})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "optimizer_seed" in message
    assert "'two'" in message
    assert "an integer or null" in message


def test_checkpoint_every_defaults_to_none(tmp_path, plugins):
    experiment = load_experiment(write(tmp_path, {}), plugins)
    assert [c.checkpoint_every for c in experiment.cells] == [None]


@pytest.mark.parametrize("bad", [0, -2, 2.5, "10", True])
def test_checkpoint_every_rejects_value(tmp_path, plugins, bad):
    path = write(tmp_path, {"evaluation": {"checkpoint_every": bad}})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "evaluation.checkpoint_every" in message
    assert "an integer >= 1" in message
    assert repr(bad) in message


def test_unknown_training_setting_lists_fields(tmp_path, plugins):
    path = write(tmp_path, {"optimizer": "grpo", "training": {"lr": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    assert "learning_rate" in str(info.value)


def test_grpo_with_scaler_rejected(tmp_path, plugins):
    path = write(tmp_path, {"optimizer": "grpo", "scaler": "clip"})
    with pytest.raises(ConfigError, match="grpo_s"):
        load_experiment(path, plugins)


def test_unknown_category(tmp_path, plugins):
    path = write(tmp_path, {"categories": ["insult", "insults"]})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "categories[1]" in message
    assert "Did you mean 'insult'?" in message


def test_unknown_baseline(tmp_path, plugins):
    path = write(tmp_path, {"baselines": ["bse"]})
    with pytest.raises(ConfigError, match=r"baselines\[0\]"):
        load_experiment(path, plugins)


def test_malformed_yaml_names_line(tmp_path, plugins):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmatrix: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_experiment(path, plugins)


def test_scaler_setting_validated(tmp_path, plugins):
    path = write(
        tmp_path,
        {
            "optimizer": "grpo_s",
            "scaler": "reward_gap",
            "scaler_settings": {"reward_gap": {"tau": -1}},
        },
    )
    with pytest.raises(ConfigError, match="scaler_settings.reward_gap"):
        load_experiment(path, plugins)


def test_model_path_not_folder(tmp_path, plugins):
    path = write(tmp_path, {"model": str(tmp_path / "missing-model")})
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "field 'model'" in message
    assert "is not a folder" in message


def test_model_folder_without_config(tmp_path, plugins):
    folder = tmp_path / "model"
    folder.mkdir()
    path = write(tmp_path, {"model": str(folder)})
    with pytest.raises(ConfigError, match="has no config.json"):
        load_experiment(path, plugins)


def test_paper_example_has_every_baseline(plugins):
    experiment = load_experiment(Path("examples/paper.yaml"), plugins)
    optimizers = {cell.optimizer for cell in experiment.cells}
    assert optimizers == {"none", "sft", "dpo", "grpo", "ppo", "grpo_s"}


def test_shared_training_field_rejected_for_other_optimizer(tmp_path, plugins):
    path = write(
        tmp_path,
        {"training": {"num_generations": 4}, "baselines": ["sft", "grpo"]},
    )
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, plugins)
    assert caught.value.field.startswith("training.num_generations")
    assert "optimizer_settings" in str(caught.value)


def test_optimizer_settings_apply_to_one_optimizer(tmp_path, plugins):
    path = write(
        tmp_path,
        {
            "training": {"steps": 3},
            "optimizer_settings": {"grpo": {"num_generations": 2, "batch_size": 4}},
            "baselines": ["sft", "grpo"],
        },
    )
    cells = {cell.id: cell for cell in load_experiment(path, plugins).cells}
    assert cells["grpo"].training.num_generations == 2
    assert cells["grpo"].training.steps == 3
    assert cells["sft"].training.steps == 3


def test_optimizer_settings_unknown_optimizer(tmp_path, plugins):
    path = write(tmp_path, {"optimizer_settings": {"grpp": {"beta": 0.1}}})
    with pytest.raises(ConfigError, match="grpo"):
        load_experiment(path, plugins)


def test_optimizer_settings_unknown_key(tmp_path, plugins):
    path = write(tmp_path, {"optimizer_settings": {"grpo_s": {"colour": 1}}})
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, plugins)
    assert caught.value.field == "optimizer_settings.grpo_s.colour"


def test_top_level_typo_suggests_field(tmp_path, plugins):
    path = write(tmp_path, {"optimiser": "grpo"})
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        load_experiment(path, plugins)


def test_invalid_value_names_its_field(tmp_path, plugins):
    path = write(tmp_path, {"training": {"steps": -3}})
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, plugins)
    assert caught.value.field == "training.steps"
