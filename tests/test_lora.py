"""LoRA adapters for sft, grpo and grpo_s (``lora`` in their settings).

One tiny `drirl run` on the embedded model: a two-step supervised warm start with LoRA
rank 4, then two GRPO-S steps with LoRA rank 4, saving the policy after step 1. Every
stage is real (TRL SFTTrainer, RewardTrainer and GRPOTrainer with peft adapters,
lm-eval generation). The settings checks run without a model.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from drirl.checkpoints import list_checkpoints
from drirl.cli import main
from drirl.config import load_experiment
from drirl.embedded import embedded_policy_path
from drirl.errors import ConfigError
from drirl.lora import LORA_DEFAULTS, lora_config, lora_values
from drirl.plugins.optimizers.grpo_data import GRPOSettings
from drirl.plugins.optimizers.sft import SFTSettings
from drirl.warm_start import warm_start_key_settings

EXPERIMENT = {
    "name": "lora",
    "categories": ["insult"],
    "data": {"train_per_category": 1, "eval_per_category": 1},
    "reward": {"learner": "bradley_terry", "settings": {"max_new_tokens": 16}},
    "warm_start": {
        "optimizer": "sft",
        "settings": {
            "steps": 2,
            "batch_size": 2,
            "learning_rate": 1.0e-3,
            "lora": {"r": 4, "alpha": 8},
        },
    },
    "optimizer": "grpo_s",
    "scaler": "clip",
    "training": {
        "steps": 2,
        "batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 12,
        # A learning rate this high moves the adapters visibly in two steps.
        "learning_rate": 1.0e-3,
        "lora": {"r": 4, "alpha": 8},
    },
    "evaluation": {"settings": {"max_new_tokens": 12}, "checkpoint_every": 1},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    experiment = folder / "lora.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
    out = folder / "run"
    assert main(["run", str(experiment), "--out", str(out), "--quiet"]) == 0
    return out


def _stage_dir(run, stage):
    cell = json.loads((run / "cells" / "default.json").read_text())
    return run / cell["stages"][stage]


def _optimize_dir(run):
    return _stage_dir(run, "optimize")


def _weights(folder):
    return load_file(folder / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def base_weights():
    return load_file(embedded_policy_path() / "model.safetensors")


ATTENTION = "model.layers.0.self_attn.q_proj.weight"
EMBEDDINGS = "model.embed_tokens.weight"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["warm_start", "optimize"])
def test_lora_saves_plain_model(run, stage):
    model = _stage_dir(run, stage) / "model"
    assert (model / "model.safetensors").is_file()
    assert list(model.glob("adapter_*")) == []


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["warm_start", "optimize"])
def test_lora_keeps_embeddings_frozen(run, base_weights, stage):
    trained = _weights(_stage_dir(run, stage))
    assert torch.equal(trained[EMBEDDINGS], base_weights[EMBEDDINGS])


@pytest.mark.slow
def test_lora_warm_start_moves_attention(run, base_weights):
    trained = _weights(_stage_dir(run, "warm_start"))
    assert trained.keys() == base_weights.keys()
    assert not torch.equal(trained[ATTENTION], base_weights[ATTENTION])


@pytest.mark.slow
def test_lora_grpo_moves_attention(run):
    start = _weights(_stage_dir(run, "warm_start"))
    trained = _weights(_optimize_dir(run))
    assert not torch.equal(trained[ATTENTION], start[ATTENTION])


@pytest.mark.slow
def test_lora_checkpoint_is_merged(run):
    saved = list_checkpoints(_optimize_dir(run))
    assert [step for step, _ in saved] == [1]
    folder = saved[0][1]
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert sorted(p.name for p in folder.glob("adapter_*")) == []
    assert not (folder / "README.md").exists()


@pytest.mark.slow
def test_lora_checkpoint_evaluated(run):
    cell = json.loads((run / "cells" / "default.json").read_text())
    rows = cell["training"]["checkpoints"]
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["metrics"]["harmful_refusal/all"]["n"] == 1


@pytest.mark.slow
def test_lora_in_stage_key(run):
    inputs = json.loads((_optimize_dir(run) / "stage.json").read_text())["inputs"]
    assert inputs["training"]["lora"] == {"r": 4, "alpha": 8}


# The settings, without a model.


def test_lora_off_by_default():
    assert GRPOSettings().lora is None
    assert lora_values(None) is None


def test_lora_fills_defaults():
    values = lora_values({"r": 8})
    assert values == {**LORA_DEFAULTS, "r": 8}


def test_lora_config_for_causal_lm():
    config = lora_config(lora_values({"r": 8, "target_modules": ["q_proj", "v_proj"]}))
    assert config.r == 8
    assert config.lora_alpha == LORA_DEFAULTS["alpha"]
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert config.task_type == "CAUSAL_LM"


@pytest.mark.parametrize(
    ("lora", "key"),
    [
        ({"r": 0}, "lora.r"),
        ({"r": 2.5}, "lora.r"),
        ({"r": True}, "lora.r"),
        ({"alpha": -1}, "lora.alpha"),
        ({"dropout": 1.0}, "lora.dropout"),
        ({"target_modules": []}, "lora.target_modules"),
        ({"target_modules": "q_proj"}, "lora.target_modules"),
        ({"rank": 8}, "unknown key(s) rank"),
        ("yes", "lora is 'yes'"),
    ],
)
def test_lora_rejects_value(lora, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        GRPOSettings(lora=lora)


def test_bad_lora_names_field(tmp_path, plugins):
    experiment = {"optimizer": "grpo", "training": {"lora": {"alpha": 0}}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_experiment(path, plugins)
    message = str(info.value)
    assert "training" in message
    assert "lora.alpha is 0" in message
    assert "a number > 0" in message


def test_warm_start_key_skips_unset_lora():
    assert "lora" not in warm_start_key_settings(SFTSettings())


def test_warm_start_key_keeps_set_lora():
    values = warm_start_key_settings(SFTSettings(lora={"r": 4}))
    assert values["lora"] == {"r": 4}
