"""GRPO-S training step time against TRL's GRPO step on identical settings.

Each round trains the embedded SmolLM2-135M-Instruct for one step from the same seed on the
quickstart's batch shape: 8 completions of up to 48 tokens. A reward model of the same
architecture scores them; its freshly initialised sequence-classification head costs the
same to run as a trained one. From the same seed both optimizers sample the same
completions, so the step times differ only by GRPO-S's own work (encoding, similarity,
reward gap). TRL logs each step's wall time as ``step_time``.

Target: GRPO-S median step time at most 1.05x GRPO's.
"""

from __future__ import annotations

import statistics

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

from drirl.components import RunContext
from drirl.dataset import balance, load_records, select
from drirl.embedded import embedded_policy_path
from drirl.plugin_manager import load_plugins
from drirl.plugins.harm_categories.builtin import CATEGORIES, DATA
from drirl.plugins.optimizers.grpo import GRPO
from drirl.plugins.optimizers.grpo_data import GRPOSettings
from drirl.plugins.optimizers.grpo_s import GRPOS
from drirl.reward_model import RewardModelScorer, distinct_pad_token
from drirl.scaling import build_scaler

STEPS = 1
ROUNDS = 3
SETTINGS = GRPOSettings(
    learning_rate=3e-5,
    steps=STEPS,
    batch_size=8,
    num_generations=4,
    max_completion_length=48,
)
step_medians: dict[str, float] = {}


@pytest.fixture(scope="module")
def records():
    every = [
        r for name in CATEGORIES for r in load_records(DATA / f"{name}.jsonl", name)
    ]
    return balance(select(every, split="train"), per_category=4)


@pytest.fixture(scope="module")
def scorer():
    policy = embedded_policy_path()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.pad_token = distinct_pad_token(tokenizer)
    set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        policy, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return RewardModelScorer(
        {"single": (model, tokenizer)},
        {name: "single" for name in CATEGORIES},
        max_length=320,
    )


def train_steps(optimizer, records, scorer, scaler, out_dir) -> list[float]:
    ctx = RunContext(seed=0, show_progress=False)
    result = optimizer.train(
        embedded_policy_path(), records, scorer, scaler, out_dir, ctx
    )
    return [float(row["step_time"]) for row in result.log_history if "step_time" in row]


@pytest.mark.parametrize("name", ["grpo", "grpo_s"])
def test_grpo_step_time(benchmark, name, records, scorer, tmp_path):
    ctx = RunContext(seed=0, show_progress=False)
    if name == "grpo":
        optimizer, scaler = GRPO(SETTINGS), None
    else:
        plugins = load_plugins(use_entry_points=False)
        optimizer = GRPOS(SETTINGS)
        scaler = build_scaler(["clip", "reward_gap"], {}, plugins, ctx)
    times: list[float] = []

    def one_round() -> None:
        out_dir = tmp_path / f"round-{len(times)}"
        times.extend(train_steps(optimizer, records, scorer, scaler, out_dir))

    benchmark.pedantic(one_round, rounds=ROUNDS)
    median = statistics.median(times)
    step_medians[name] = median
    benchmark.extra_info["median_step_s"] = round(median, 3)
    if "grpo" in step_medians and "grpo_s" in step_medians:
        ratio = step_medians["grpo_s"] / step_medians["grpo"]
        benchmark.extra_info["ratio_to_grpo"] = round(ratio, 3)
    assert len(times) == ROUNDS * STEPS
