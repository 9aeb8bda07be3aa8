"""GRPO-S advantage scaling, settings, data and reward wiring, without training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from drirl.components import Record, RunContext
from drirl.errors import ConfigError, DrirlError
from drirl.plugins.optimizers.grpo import GRPO
from drirl.plugins.optimizers.grpo_data import (
    GRPOSettings,
    NonFiniteRewardError,
    completion_text,
    make_reward_function,
    train_records,
)
from drirl.plugins.optimizers.grpo_run import build_config
from drirl.plugins.scalers.clip import ClipScaler
from drirl.plugins.scalers.none import NoScaler
from drirl.plugins.scalers.reward_gap import group_gap_factors
from drirl.scaling import (
    CombinedScaler,
    group_advantages,
    is_identity_scaler,
    scale_advantages,
    zero_spread_fraction,
    zero_spread_groups,
)

EPS = 1e-4


def record(index: int, kind: str = "harmful", split: str = "train") -> Record:
    return Record(
        f"r{index}", "insult", kind, f"prompt {index}", f"demo {index}", split
    )


# group_advantages and scale_advantages


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 3.0, 0.0, 4.0, 8.0])
    ids = torch.tensor([0, 0, 1, 1, 1])
    # Group 0: mean 2, sample std sqrt(2). Group 1: mean 4, sample std 4.
    expected = torch.tensor(
        [
            -1 / (math.sqrt(2) + EPS),
            1 / (math.sqrt(2) + EPS),
            -4 / (4 + EPS),
            0.0,
            4 / (4 + EPS),
        ]
    )
    assert torch.allclose(group_advantages(rewards, ids, EPS), expected, atol=1e-6)


def test_zero_spread_group_stays_zero():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0])
    ids = torch.tensor([0, 0, 0, 1, 1])
    alpha = torch.tensor([7.0, 0.3, 2.0, 1.0, 1.0])
    scaled = scale_advantages(group_advantages(rewards, ids), alpha)
    assert torch.equal(scaled[:3], torch.zeros(3))


def test_scaled_differs_by_alpha():
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0, 1.0, 1.5])
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    alpha = torch.tensor([1.5, 1.5, 1.5, 0.5, 0.7, 0.9])
    plain = group_advantages(rewards, ids)
    assert torch.equal(scale_advantages(plain, alpha), plain * alpha)


def test_scaling_raw_rewards_cancels():
    # A per-prompt factor applied to the raw rewards scales each group's mean and spread
    # alike, so normalisation removes it: that is why alpha multiplies the advantage.
    rewards = torch.tensor([0.0, 1.0, 3.0, 2.0, 4.0, 9.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    per_prompt = torch.tensor([3.0, 3.0, 3.0, 0.5, 0.5, 0.5])
    before = group_advantages(rewards * per_prompt, ids)
    after = scale_advantages(group_advantages(rewards, ids), per_prompt)
    assert torch.allclose(before, group_advantages(rewards, ids), atol=1e-3)
    assert not torch.allclose(before, after, atol=1e-2)


def test_advantages_order_independent():
    rewards = torch.tensor([0.0, 1.0, 5.0, 2.0, 2.0, 3.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    order = torch.tensor([4, 2, 0, 5, 3, 1])
    shuffled = group_advantages(rewards[order], ids[order])
    assert torch.allclose(shuffled, group_advantages(rewards, ids)[order])


def test_same_prompt_keeps_two_groups():
    # The same prompt appears twice; group ids, not prompt texts, decide the groups.
    rewards = torch.tensor([0.0, 1.0, 5.0, 5.0])
    ids = torch.tensor([0, 0, 1, 1])
    advantages = group_advantages(rewards, ids)
    assert torch.equal(advantages[2:], torch.zeros(2))
    assert advantages[1] > 0


def test_same_prompt_gap_factors_per_group():
    gaps = torch.tensor([-2.0, -2.0, 0.0, 0.0])
    alpha = group_gap_factors(gaps, torch.tensor([0, 0, 1, 1]), reference=-1.0)
    assert alpha[0] != alpha[2]


def test_nan_reward_zero_advantage():
    rewards = torch.tensor([float("nan"), 1.0, 3.0])
    advantages = group_advantages(rewards, torch.tensor([0, 0, 0]))
    assert advantages[0] == 0.0
    assert torch.isfinite(advantages).all()


def test_zero_spread_fraction():
    rewards = torch.tensor([1.0, 1.0, 0.0, 2.0, 3.0, 3.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    assert zero_spread_fraction(rewards, ids) == pytest.approx(2 / 3)


def test_zero_spread_groups_mask():
    mask = zero_spread_groups(
        torch.tensor([1.0, 1.0, 0.0, 2.0]), torch.tensor([0, 0, 1, 1])
    )
    assert mask.tolist() == [True, True, False, False]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_scale_rejects_bad_alpha(bad):
    with pytest.raises(ValueError, match="finite and positive"):
        scale_advantages(torch.ones(2), torch.tensor([1.0, bad]))


def test_scale_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        scale_advantages(torch.ones(4), torch.ones(2))


# Settings


def test_settings_batch_not_divisible():
    with pytest.raises(ValueError, match="batch_size"):
        GRPOSettings(batch_size=6, num_generations=4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_generations", 1),
        ("temperature", 0.0),
        ("learning_rate", -1e-5),
        ("steps", 0),
        ("beta", -0.1),
        ("logging_steps", 0),
        ("nonfinite_rewards", "ignore"),
    ],
)
def test_settings_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        GRPOSettings(**{field: value})


def test_config_cpu_fp32(tmp_path):
    settings = GRPOSettings(steps=3, batch_size=4, num_generations=2, beta=0.0)
    config = build_config(settings, tmp_path, RunContext(seed=7, show_progress=False))
    assert config.use_cpu
    assert not config.bf16
    assert not config.gradient_checkpointing
    assert config.max_steps == 3
    assert config.per_device_train_batch_size == 4
    assert config.num_generations == 2
    assert config.seed == 7
    assert config.disable_tqdm


def test_config_passes_trl_args(tmp_path):
    settings = GRPOSettings(
        batch_size=4, num_generations=2, trl_args={"loss_type": "grpo"}
    )
    assert build_config(settings, tmp_path, RunContext()).loss_type == "grpo"


def test_config_unknown_trl_arg(tmp_path):
    settings = GRPOSettings(
        batch_size=4, num_generations=2, trl_args={"no_such_field": 1}
    )
    with pytest.raises(ConfigError, match="no_such_field"):
        build_config(settings, tmp_path, RunContext())


def test_config_managed_trl_arg(tmp_path):
    settings = GRPOSettings(
        batch_size=4, num_generations=2, trl_args={"max_steps": 100}
    )
    with pytest.raises(ConfigError, match="max_steps"):
        build_config(settings, tmp_path, RunContext())


# Training data


def test_train_records_mix_kinds():
    records = [record(i, "harmful") for i in range(5)] + [
        record(i + 5, "benign") for i in range(5)
    ]
    kinds = {r.kind for r in train_records(records, seed=0)}
    assert kinds == {"harmful", "benign"}


def test_train_records_only_train_split():
    records = [record(0), record(1, split="eval")]
    assert [r.id for r in train_records(records, seed=0)] == ["r0"]


def test_train_records_seeded_shuffle():
    records = [record(i) for i in range(20)]
    first = [r.id for r in train_records(records, seed=3)]
    assert first == [r.id for r in train_records(records, seed=3)]
    assert first != [r.id for r in records]


def test_train_records_none_in_split():
    with pytest.raises(DrirlError, match="train"):
        train_records([record(0, split="eval")], seed=0)


# Reward function


class TableScorer:
    """Returns preset rewards in order; lets a test feed NaN or inf through the reward path."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.seen: list[tuple] = []

    def score(self, prompts, responses, categories):
        self.seen.append((list(prompts), list(responses), list(categories)))
        return torch.tensor(self.values)


def call_reward(scorer, policy="raise"):
    reward = make_reward_function(scorer, policy)
    completions = [
        [{"role": "assistant", "content": "Sure."}],
        [{"role": "assistant", "content": "No."}],
    ]
    return reward(
        prompts=[[{"role": "user", "content": "q"}]] * 2,
        completions=completions,
        prompt_text=["q", "q"],
        category=["insult", "privacy_property"],
    )


def test_reward_routes_category():
    scorer = TableScorer([0.5, 1.0])
    call_reward(scorer)
    assert scorer.seen[0] == (
        ["q", "q"],
        ["Sure.", "No."],
        ["insult", "privacy_property"],
    )


def test_reward_nan_raises():
    with pytest.raises(NonFiniteRewardError, match="nan"):
        call_reward(TableScorer([0.5, float("nan")]))


def test_reward_inf_masked():
    assert call_reward(TableScorer([float("inf"), 1.0]), "mask") == [None, 1.0]


def test_reward_wrong_count():
    with pytest.raises(ValueError, match="1 rewards for 2"):
        call_reward(TableScorer([0.5]))


def test_completion_text_forms():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    assert (
        completion_text(
            [{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]
        )
        == "hi"
    )


# Optimizer contracts


def test_identity_scalers():
    assert is_identity_scaler(None)
    assert is_identity_scaler(CombinedScaler([NoScaler()]))
    assert not is_identity_scaler(ClipScaler())


def test_grpo_rejects_scaler(tmp_path):
    optimizer = GRPO(GRPOSettings(batch_size=4, num_generations=2))
    with pytest.raises(ValueError, match="grpo_s"):
        optimizer.train(
            Path("unused"),
            [record(0)],
            TableScorer([1.0]),
            ClipScaler(),
            tmp_path,
            RunContext(),
        )


def test_optimizers_registered(plugins):
    assert set(plugins.registry("optimizer").names()) >= {"grpo", "grpo_s"}
