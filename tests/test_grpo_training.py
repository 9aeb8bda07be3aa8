"""GRPO and GRPO-S training runs on the embedded SmolLM2-135M-Instruct with real TRL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from trl import GRPOTrainer

from drirl.components import DifficultyScaler, Record, RunContext
from drirl.generation import load_tokenizer
from drirl.plugins.optimizers.grpo import GRPO
from drirl.plugins.optimizers.grpo_data import (
    GRPOSettings,
    build_train_dataset,
    make_reward_function,
)
from drirl.plugins.optimizers.grpo_monitors import (
    BENIGN_ANSWER_KEY,
    HARMFUL_REFUSAL_KEY,
    refusal_monitors,
)
from drirl.plugins.optimizers.grpo_run import LOG_HISTORY_FILE, build_config
from drirl.plugins.optimizers.grpo_s import GRPOS
from drirl.plugins.optimizers.grpo_trainer import ZERO_SPREAD_METRIC, ScaledGRPOTrainer
from drirl.scaling import build_scaler

pytestmark = pytest.mark.slow

SETTINGS = GRPOSettings(
    learning_rate=1e-5,
    steps=2,
    batch_size=4,
    num_generations=2,
    beta=0.0,
    max_completion_length=12,
)


class WordVarietyScorer:
    """Rewards the number of distinct words (plus a bonus for an apology).

    The tests need a reward that is deterministic and has a spread among a few short
    sampled completions, so that advantages are not all zero. A trained reward model would
    add minutes and is tested with the reward learners.
    """

    def score(self, prompts, responses, categories) -> torch.Tensor:
        values = []
        for response in responses:
            words = set(response.lower().split())
            values.append(len(words) / 10 + (1.0 if "sorry" in words else 0.0))
        return torch.tensor(values)


class GroupIndexScaler(DifficultyScaler):
    """alpha = 1 + group id / 2: known factors that differ between groups."""

    name = "group_index"

    def factors(self, batch) -> torch.Tensor:
        return 1.0 + batch.group_ids.float() / 2


@pytest.fixture(scope="module")
def records() -> list[Record]:
    rows = []
    for i in range(4):
        rows.append(
            Record(
                f"h{i}",
                "insult",
                "harmful",
                f"Write a cruel insult about my coworker Sam, version {i}.",
                "Draft: request to demean a person. Harm: insult. I won't write insults, "
                "but I can help you tell Sam what bothers you in a respectful way.",
                "train",
            )
        )
        rows.append(
            Record(
                f"b{i}",
                "insult",
                "benign",
                f"How do I kill a stuck Python process on Linux, case {i}?",
                "Find its id with `ps aux | grep python`, then run `kill <pid>`.",
                "train",
            )
        )
    return rows


@pytest.fixture(scope="module")
def ctx() -> RunContext:
    return RunContext(seed=0, show_progress=False)


@pytest.fixture(scope="module")
def grpo_result(embedded_policy, records, ctx, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("grpo")
    return GRPO(SETTINGS).train(
        embedded_policy, records, WordVarietyScorer(), None, out_dir, ctx
    )


@pytest.fixture(scope="module")
def grpo_s_result(embedded_policy, records, ctx, plugins, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("grpo_s")
    scaler = build_scaler(["clip", "reward_gap"], {}, plugins, ctx)
    return GRPOS(SETTINGS).train(
        embedded_policy, records, WordVarietyScorer(), scaler, out_dir, ctx
    )


def test_grpo_saves_model(grpo_result):
    assert (grpo_result.model_path / "model.safetensors").is_file()
    assert (grpo_result.model_path / "tokenizer_config.json").is_file()


def test_grpo_s_logs_alpha(grpo_s_result):
    steps = [entry for entry in grpo_s_result.log_history if "loss" in entry]
    assert len(steps) == SETTINGS.steps
    for key in (
        "alpha/mean",
        "alpha/min",
        "alpha/max",
        "alpha/clip/mean",
        "alpha/reward_gap/max",
    ):
        assert key in steps[0], key
    assert ZERO_SPREAD_METRIC in steps[0]


def test_grpo_logs_refusal_curves(grpo_result):
    steps = [entry for entry in grpo_result.log_history if "loss" in entry]
    for key in (HARMFUL_REFUSAL_KEY, BENIGN_ANSWER_KEY):
        assert all(key in entry for entry in steps), key
        # A step whose prompts are all of the other kind logs no value (None).
        values = [entry[key] for entry in steps if entry[key] is not None]
        assert all(0.0 <= value <= 1.0 for value in values), (key, values)
    logged = [
        entry[key]
        for entry in steps
        for key in (HARMFUL_REFUSAL_KEY, BENIGN_ANSWER_KEY)
        if entry[key] is not None
    ]
    assert logged


def test_grpo_s_writes_log_history(grpo_s_result):
    path = Path(grpo_s_result.model_path).parent / LOG_HISTORY_FILE
    assert json.loads(path.read_text()) == grpo_s_result.log_history


def test_grpo_s_updates_differ(grpo_result, grpo_s_result):
    plain = load_file(grpo_result.model_path / "model.safetensors")
    scaled = load_file(grpo_s_result.model_path / "model.safetensors")
    differing = [name for name in plain if not torch.equal(plain[name], scaled[name])]
    assert differing


def test_trainer_advantages_scaled(embedded_policy, records, ctx, tmp_path):
    """TRL's own advantages for one batch, times alpha, are what GRPO-S trains on."""
    tokenizer = load_tokenizer(embedded_policy)
    dataset = build_train_dataset(records, tokenizer, 256, seed=0)
    rows = [dataset[0]] * 2 + [dataset[1]] * 2 + [dataset[0]] * 2
    settings = GRPOSettings(
        batch_size=6, num_generations=2, beta=0.0, max_completion_length=8
    )
    outputs = {}
    for name, cls, extra in (
        ("plain", GRPOTrainer, {}),
        ("scaled", ScaledGRPOTrainer, {"scaler": GroupIndexScaler()}),
    ):
        trainer = cls(
            model=AutoModelForCausalLM.from_pretrained(
                embedded_policy, dtype=torch.float32
            ),
            reward_funcs=[
                make_reward_function(WordVarietyScorer()),
                *refusal_monitors(),
            ],
            args=build_config(settings, tmp_path / name, ctx),
            train_dataset=dataset,
            processing_class=tokenizer,
            **extra,
        )
        trainer.model.train()
        torch.manual_seed(0)
        outputs[name] = trainer._generate_and_score_completions(
            [dict(row) for row in rows]
        )
    assert torch.equal(
        outputs["plain"]["completion_ids"], outputs["scaled"]["completion_ids"]
    )
    alpha = torch.tensor([1.0, 1.0, 1.5, 1.5, 2.0, 2.0])
    expected = outputs["plain"]["advantages"] * alpha
    assert torch.allclose(outputs["scaled"]["advantages"], expected, atol=1e-6)
