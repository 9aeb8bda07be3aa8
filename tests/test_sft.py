"""The ``sft`` optimizer on the embedded SmolLM2-135M-Instruct with real TRL SFTTrainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from drirl.components import OptimizerSettings, RunContext
from drirl.config import load_experiment
from drirl.errors import ConfigError
from drirl.dataset import balanced_by_kind
from drirl.generation import chat_text
from drirl.plugins.optimizers.sft import (
    SFT,
    SFTSettings,
    build_sft_dataset,
    build_sft_trainer,
)
from drirl.plugins.scalers.clip import ClipScaler

CTX = RunContext(show_progress=False)


def insult_train(plugins, kind: str, count: int):
    records = plugins.get("harm_category", "insult").load_records()
    return [r for r in records if r.kind == kind and r.split == "train"][:count]


@pytest.fixture(scope="module")
def records(plugins):
    return insult_train(plugins, "harmful", 1) + insult_train(plugins, "benign", 1)


@pytest.fixture(scope="module")
def trainer(embedded_policy, records, tmp_path_factory):
    settings = SFTSettings(steps=1, batch_size=2)
    out = tmp_path_factory.mktemp("sft")
    return build_sft_trainer(settings, embedded_policy, records, out, CTX)


def split_row(row):
    """Return the (prompt ids, completion ids) of a tokenized row, split by its labels."""
    ids, labels = row["input_ids"], row["labels"]
    start = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:start])
    assert labels[start:] == ids[start:]
    return ids[:start], ids[start:]


# Chat template: what the trainer tokenizes.


def test_sft_prompt_ends_with_generation_prompt(trainer, records):
    tokenizer = trainer.processing_class
    by_prompt = {
        tuple(
            tokenizer(chat_text(tokenizer, r.prompt), add_special_tokens=False)[
                "input_ids"
            ]
        ): r
        for r in records
    }
    for row in trainer.train_dataset:
        prompt, _ = split_row(row)
        assert tuple(prompt) in by_prompt
        assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")


def test_sft_completion_is_demonstration(trainer, records):
    tokenizer = trainer.processing_class
    expected = sorted(r.demonstration + "<|im_end|>\n" for r in records)
    completions = sorted(
        tokenizer.decode(split_row(row)[1]) for row in trainer.train_dataset
    )
    assert completions == expected


def test_sft_one_end_of_turn_token(trainer):
    end_of_turn = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    for row in trainer.train_dataset:
        _, completion = split_row(row)
        assert completion.count(end_of_turn) == 1


def test_sft_trains_both_kinds(trainer, records):
    assert len(trainer.train_dataset) == len(records)


# Settings: shared fields and fields that belong to other optimizers.


def test_balanced_by_kind_repeats_rarer_kind(plugins):
    harmful = insult_train(plugins, "harmful", 5)
    benign = insult_train(plugins, "benign", 2)
    balanced = balanced_by_kind(harmful + benign)
    ids = [record.id for record in balanced]
    # The originals keep their order; the benign ones repeat in turn to reach five.
    assert ids[:7] == [record.id for record in harmful + benign]
    assert ids[7:] == [benign[0].id, benign[1].id, benign[0].id]


def test_sft_dataset_balances_kinds(plugins, trainer):
    records = insult_train(plugins, "harmful", 4) + insult_train(plugins, "benign", 1)
    tokenizer = trainer.processing_class
    balanced = build_sft_dataset(records, tokenizer, SFTSettings())
    unbalanced = build_sft_dataset(records, tokenizer, SFTSettings(balance_kinds=False))
    assert len(unbalanced) == 5
    assert len(balanced) == 8
    benign_prompt = records[-1].prompt
    assert sum(row["prompt"][-1]["content"] == benign_prompt for row in balanced) == 4


def test_sft_shares_optimizer_fields():
    shared = {f.name: f.default for f in dataclasses.fields(OptimizerSettings)}
    own = {f.name: f.default for f in dataclasses.fields(SFTSettings)}
    del shared["beta"]
    assert {name: own[name] for name in shared} == shared


def test_sft_rejects_beta(plugins):
    experiment = {"name": "t", "optimizer": "sft", "training": {"beta": 0.1}}
    with pytest.raises(ConfigError) as error:
        load_experiment(experiment, plugins, file="exp.yaml")
    message = str(error.value)
    assert "training.beta" in message
    assert "optimizer 'sft'" in message
    assert "learning_rate, steps, batch_size" in message


def test_sft_rejects_scaler_in_config(plugins):
    experiment = {"name": "t", "optimizer": "sft", "scaler": "clip"}
    with pytest.raises(ConfigError, match="takes no difficulty scaler"):
        load_experiment(experiment, plugins, file="exp.yaml")


def test_sft_rejects_scaler_in_train(embedded_policy, records, tmp_path):
    with pytest.raises(ValueError, match="scaler 'none'"):
        SFT(SFTSettings(steps=1)).train(
            embedded_policy, records, None, ClipScaler(None, CTX), tmp_path, CTX
        )


def test_sft_settings_reject_zero_steps():
    with pytest.raises(ValueError, match="steps is 0"):
        SFTSettings(steps=0)


def test_sft_registered_without_reward(plugins):
    optimizer = plugins.get("optimizer", "sft")
    assert optimizer.needs_reward is False
    assert optimizer.accepts_scaler is False


def test_sft_preset_registered(plugins):
    assert plugins.presets["sft"] == {"optimizer": "sft", "scaler": "none"}


# One short real run.


@pytest.mark.slow
def test_sft_run_changes_parameters(embedded_policy, records, tmp_path):
    settings = SFTSettings(learning_rate=1e-4, steps=2, batch_size=2)
    result = SFT(settings).train(embedded_policy, records, None, None, tmp_path, CTX)

    before = load_file(Path(embedded_policy) / "model.safetensors")
    after = load_file(result.model_path / "model.safetensors")
    shared = sorted(set(before) & set(after))
    changed = [name for name in shared if not torch.equal(before[name], after[name])]
    assert shared
    assert changed
    assert [row["step"] for row in result.log_history if "loss" in row] == [1, 2]
