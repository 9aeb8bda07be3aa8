"""GRPO-S training step time against TRL's GRPO step on identical settings.

Each round trains the embedded SmolLM2-135M-Instruct for one step from the same seed on the
quickstart's batch shape: 8 completions of up to 48 tokens. A reward model of the same
architecture scores them; its freshly initialised sequence-classification head costs the
same to run as a trained one. From the same seed both optimizers sample the same
completions, so the step times differ only by GRPO-S's own work (encoding, similarity,
reward gap). TRL logs each step's wall time as ``step_time``.

Each round runs both optimizers back to back, in alternating order, and the recorded ratio
is the median over rounds of GRPO-S's step time divided by GRPO's in the same round. A
warm-up round before them is left out.

Target: GRPO-S step time at most 1.05x GRPO's.
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
# Measured rounds, after one warm-up round that is left out of the statistics.
ROUNDS = 5
SETTINGS = GRPOSettings(
    learning_rate=3e-5,
    steps=STEPS,
    batch_size=8,
    num_generations=4,
    max_completion_length=48,
)


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


def test_grpo_step_time(benchmark, records, scorer, tmp_path):
    """One round trains GRPO and GRPO-S for one step each, alternating which goes first."""
    ctx = RunContext(seed=0, show_progress=False)
    plugins = load_plugins(use_entry_points=False)
    optimizers = {
        "grpo": (GRPO(SETTINGS), None),
        "grpo_s": (
            GRPOS(SETTINGS),
            build_scaler(["clip", "reward_gap"], {}, plugins, ctx),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in optimizers}

    def one_round() -> None:
        index = len(times["grpo"])
        order = ["grpo", "grpo_s"] if index % 2 == 0 else ["grpo_s", "grpo"]
        for name in order:
            optimizer, scaler = optimizers[name]
            out_dir = tmp_path / f"{name}-{index}"
            times[name].extend(train_steps(optimizer, records, scorer, scaler, out_dir))

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    for name, values in times.items():
        benchmark.extra_info[f"median_step_s_{name}"] = round(
            statistics.median(values[STEPS:]), 3
        )
    # Each round's two steps ran back to back, so their ratio cancels slow drifts of the
    # machine; the median over rounds is the recorded ratio.
    ratios = [
        scaled / plain
        for scaled, plain in zip(times["grpo_s"][STEPS:], times["grpo"][STEPS:])
    ]
    benchmark.extra_info["paired_ratios"] = [round(r, 3) for r in ratios]
    benchmark.extra_info["ratio_to_grpo"] = round(statistics.median(ratios), 3)
    assert len(times["grpo_s"]) == (ROUNDS + 1) * STEPS
