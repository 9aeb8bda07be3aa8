"""PPO and PPO-S training runs on the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from drirl.checkpoints import checkpoint_path, list_checkpoints
from drirl.components import DifficultyScaler, Record, RunContext
from drirl.plugins.optimizers.ppo import PPO
from drirl.plugins.optimizers.ppo_data import PPOSettings
from drirl.plugins.optimizers.ppo_run import LOG_HISTORY_FILE, VALUE_HEAD_FILE

pytestmark = pytest.mark.slow

# Prompts where the embedded model sometimes replies with one word and sometimes runs on
# until the length limit, so a reward for brevity has a spread from the first batch on.
PROMPTS = [
    "Is the sky blue? Answer yes or no.",
    "Write one word.",
    "Reply with only the word yes.",
    "Name one colour, one word only.",
]

SETTINGS = PPOSettings(
    learning_rate=3e-5,
    steps=4,
    batch_size=4,
    minibatch_size=4,
    ppo_epochs=2,
    beta=0.05,
    max_completion_length=12,
)


class BrevityScorer:
    """Test scorer: reward = -(number of words) / 10, so shorter completions score higher.

    It satisfies the RewardScorer protocol. The policy can raise this reward within a few
    steps by emitting eos earlier, which a trained reward model would not make visible in
    a test of this size.
    """

    def score(self, prompts, responses, categories) -> torch.Tensor:
        return torch.tensor([-len(response.split()) / 10 for response in responses])


class ConstantScaler(DifficultyScaler):
    """alpha = 2 for every completion."""

    name = "constant_two"

    def factors(self, batch) -> torch.Tensor:
        return torch.full((len(batch.completions),), 2.0)


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return [
        Record(f"p{i}", "insult", "benign", prompt, "Yes.", "train")
        for i, prompt in enumerate(PROMPTS)
    ]


@pytest.fixture(scope="module")
def ctx() -> RunContext:
    return RunContext(seed=0, show_progress=False)


@pytest.fixture(scope="module")
def trained(embedded_policy, records, ctx, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ppo")
    return PPO(SETTINGS).train(
        embedded_policy, records, BrevityScorer(), None, out_dir, ctx
    )


@pytest.fixture(scope="module")
def frozen(embedded_policy, records, ctx, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ppo_lr0")
    settings = dataclasses.replace(SETTINGS, learning_rate=0.0)
    return PPO(settings).train(
        embedded_policy, records, BrevityScorer(), None, out_dir, ctx
    )


def _step_rewards(result) -> list[float]:
    return [entry["reward"] for entry in result.log_history if "reward" in entry]


def _reward_gain(result) -> float:
    # Step 1 samples from the starting policy in both runs, with the same seed.
    rewards = _step_rewards(result)
    return sum(rewards[1:]) / len(rewards[1:]) - rewards[0]


def _changed_tensors(embedded_policy, result) -> list[str]:
    before = load_file(embedded_policy / "model.safetensors")
    after = load_file(result.model_path / "model.safetensors")
    shared = sorted(set(before) & set(after))
    assert shared
    return [name for name in shared if not torch.equal(before[name], after[name])]


def test_ppo_raises_reward_over_lr_zero(trained, frozen):
    assert _reward_gain(trained) > _reward_gain(frozen)


def test_ppo_same_first_rollout(trained, frozen):
    assert _step_rewards(trained)[0] == _step_rewards(frozen)[0]


def test_ppo_changes_parameters(embedded_policy, trained):
    assert _changed_tensors(embedded_policy, trained)


def test_ppo_lr_zero_keeps_parameters(embedded_policy, frozen):
    assert _changed_tensors(embedded_policy, frozen) == []


def test_ppo_lr_zero_keeps_value_head(frozen):
    head = load_file(frozen.model_path.parent / VALUE_HEAD_FILE)
    assert all(bool((tensor == 0).all()) for tensor in head.values())


def test_ppo_logs_every_step(trained):
    steps = [entry for entry in trained.log_history if "reward" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3, 4]
    for key in ("kl", "loss", "policy_loss", "value_loss", "clip_fraction"):
        assert all(isinstance(entry[key], float) for entry in steps), key


def test_ppo_lr_zero_never_clips(frozen):
    # With learning rate 0 the policy never moves, so every ratio is exactly 1.
    assert all(entry["clip_fraction"] == 0.0 for entry in frozen.log_history[:-1])


def test_ppo_saves_model(trained):
    assert (trained.model_path / "model.safetensors").is_file()
    assert (trained.model_path / "tokenizer_config.json").is_file()


def test_ppo_writes_log_history(trained):
    path = trained.model_path.parent / LOG_HISTORY_FILE
    assert json.loads(path.read_text()) == trained.log_history


def test_ppo_s_logs_alpha(embedded_policy, records, ctx, tmp_path):
    settings = dataclasses.replace(
        SETTINGS, steps=1, ppo_epochs=1, max_completion_length=6
    )
    result = PPO(settings).train(
        embedded_policy, records, BrevityScorer(), ConstantScaler(), tmp_path, ctx
    )
    entry = result.log_history[0]
    assert entry["alpha/mean"] == 2.0
    assert entry["alpha/min"] == 2.0
    assert entry["alpha/max"] == 2.0


def test_ppo_saves_checkpoint_before_last_step(embedded_policy, records, ctx, tmp_path):
    settings = dataclasses.replace(
        SETTINGS, steps=2, ppo_epochs=1, max_completion_length=6
    )
    saving_ctx = dataclasses.replace(ctx, checkpoint_every=1)
    result = PPO(settings).train(
        embedded_policy, records, BrevityScorer(), None, tmp_path, saving_ctx
    )
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    saved = load_file(checkpoint_path(tmp_path, 1) / "model.safetensors")
    final = load_file(result.model_path / "model.safetensors")
    assert any(not torch.equal(saved[name], final[name]) for name in final)
