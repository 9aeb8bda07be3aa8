"""PPO arithmetic on fixed tensors, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from drirl.errors import ConfigError
from drirl.plugin_manager import read_registry_file
from drirl.plugins.optimizers.ppo import PPO
from drirl.plugins.optimizers.ppo_data import PPOSettings, prompt_batches
from drirl.plugins.optimizers.ppo_math import (
    clipped_policy_loss,
    clipped_value_loss,
    completion_mask,
    generalized_advantages,
    last_token_index,
    scale_sequence_advantages,
    token_rewards,
    whiten,
)
from drirl.plugins.optimizers.ppo_rollout import Rollout
from drirl.plugins.optimizers.ppo_update import rollout_targets
from drirl.settings import build_settings

EOS = 2  # SmolLM2's eos, which is also its pad token

# Completions as ``generate`` returns them: each is padded on the right with the pad
# token after its first eos, and pad == eos.
COMPLETIONS = torch.tensor(
    [
        [5, 6, EOS, EOS, EOS],  # ended by eos at index 2
        [7, EOS, EOS, EOS, EOS],  # ended by eos at index 1
        [8, 9, 10, 11, 12],  # cut at the maximum length, no eos
        [EOS, EOS, EOS, EOS, EOS],  # eos as the first token
    ]
)


def test_completion_mask_pad_equals_eos():
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1],
            [1, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(completion_mask(COMPLETIONS, {EOS}), expected)


def test_last_token_index_pad_equals_eos():
    mask = completion_mask(COMPLETIONS, {EOS})
    assert last_token_index(mask).tolist() == [2, 1, 4, 0]


def test_reward_on_last_real_token():
    mask = completion_mask(COMPLETIONS, {EOS})
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rewards = token_rewards(scores, torch.zeros(4, 5), mask, kl_coef=0.1)
    expected = torch.zeros(4, 5)
    expected[0, 2] = 1.0
    expected[1, 1] = 2.0
    expected[2, 4] = 3.0
    expected[3, 0] = 4.0
    assert torch.equal(rewards, expected)


def test_reward_adds_kl_penalty():
    mask = completion_mask(COMPLETIONS[:2], {EOS})
    kl = torch.tensor([[0.5, -1.0, 2.0, 9.0, 9.0], [1.0, 3.0, 9.0, 9.0, 9.0]])
    rewards = token_rewards(torch.tensor([1.0, -1.0]), kl, mask, kl_coef=0.1)
    # -0.1 * kl on real tokens, the score added on the last one, 0 on padding.
    expected = torch.tensor(
        [[-0.05, 0.1, -0.2 + 1.0, 0.0, 0.0], [-0.1, -0.3 - 1.0, 0.0, 0.0, 0.0]]
    )
    assert torch.allclose(rewards, expected)


def test_gae_hand_computed():
    # gamma 0.9, lam 0.5, so gamma * lam = 0.45.
    # Row 0, three real tokens, rewards [0, 0, 1], values [0.5, 0.2, 0.4]:
    #   t=2: delta = 1 + 0.9 * 0 - 0.4 = 0.6;          A2 = 0.6
    #   t=1: delta = 0 + 0.9 * 0.4 - 0.2 = 0.16;       A1 = 0.16 + 0.45 * 0.6 = 0.43
    #   t=0: delta = 0 + 0.9 * 0.2 - 0.5 = -0.32;      A0 = -0.32 + 0.45 * 0.43 = -0.1265
    #   returns = A + V = [0.3735, 0.63, 1.0]
    # Row 1, two real tokens then padding that contains junk (7.0 and 3.0):
    #   t=1: delta = -1 + 0.9 * 0 - 0 = -1;             A1 = -1
    #   t=0: delta = 0.5 + 0.9 * 0 - 1 = -0.5;          A0 = -0.5 + 0.45 * -1 = -0.95
    #   returns = [0.05, -1.0, 0]
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, -1.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 0.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = generalized_advantages(
        rewards, values, mask, gamma=0.9, lam=0.5
    )
    expected_advantages = torch.tensor([[-0.1265, 0.43, 0.6], [-0.95, -1.0, 0.0]])
    expected_returns = torch.tensor([[0.3735, 0.63, 1.0], [0.05, -1.0, 0.0]])
    assert torch.allclose(advantages, expected_advantages, atol=1e-6)
    assert torch.allclose(returns, expected_returns, atol=1e-6)


def test_gae_lambda_one_is_return_minus_value():
    # gamma 1, lam 1: A_t = (sum of rewards from t on) - V_t.
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    advantages, _ = generalized_advantages(
        rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0
    )
    assert torch.allclose(advantages, torch.tensor([[5.5, 4.5, 2.5]]))


def test_whiten_hand_computed():
    # Real values 1, 2, 3, 4: mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3.
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    std = math.sqrt(5.0 / 3.0 + 1e-8)
    expected = torch.tensor(
        [[-1.5 / std, -0.5 / std, 0.0], [0.5 / std, 1.5 / std, 0.0]]
    )
    assert torch.allclose(whiten(values, mask), expected, atol=1e-6)


def test_whiten_uses_reduced_moments():
    # A reduce that doubles the moments represents two processes with equal batches: the
    # mean stays and the unbiased variance uses 2n - 1.
    values = torch.tensor([[1.0, 3.0]])
    mask = torch.ones(1, 2)
    whitened = whiten(values, mask, reduce=lambda moments: moments * 2)
    variance = (1.0 + 1.0) * 2 / 3  # squared deviations 1 and 1, twice, over 4 - 1
    expected = torch.tensor([[-1.0, 1.0]]) / math.sqrt(variance + 1e-8)
    assert torch.allclose(whitened, expected, atol=1e-6)


def test_whiten_one_token_raises():
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        whiten(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]))


def test_policy_loss_hand_computed():
    # old log-probs 0, so ratio = exp(new). cliprange 0.2, ratio clipped to [0.8, 1.2].
    #   r 1.5, A  1: max(-1.5, -1.2) = -1.2   clipped
    #   r 0.5, A  1: max(-0.5, -0.8) = -0.5
    #   r 0.5, A -2: max( 1.0,  1.6) =  1.6   clipped
    #   r 1.1, A -1: max( 1.1,  1.1) =  1.1
    #   padding (r 3, A 5) does not count.
    # loss = (-1.2 - 0.5 + 1.6 + 1.1) / 4 = 0.25; clip fraction 2 / 4.
    ratios = torch.tensor([[1.5, 0.5, 0.5], [1.1, 3.0, 3.0]])
    advantages = torch.tensor([[1.0, 1.0, -2.0], [-1.0, 5.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, clip_fraction = clipped_policy_loss(
        torch.log(ratios), torch.zeros(2, 3), advantages, mask, cliprange=0.2
    )
    assert loss.item() == pytest.approx(0.25, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(0.5)


def test_policy_loss_gradient_zero_when_clipped():
    # Ratio 1.5 with A = 1 is past 1 + eps, so the clipped term is the max and is constant.
    new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _ = clipped_policy_loss(
        new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2
    )
    loss.backward()
    assert new.grad.abs().item() == 0.0


def test_value_loss_hand_computed():
    # cliprange_value 0.2:
    #   old 1.0, new 1.5, R  2: (1.5-2)^2 = 0.25, clipped 1.2: 0.64   -> 0.64 clipped
    #   old 0.0, new 0.1, R -1: (1.1)^2 = 1.21, clipped 0.1: 1.21     -> 1.21
    #   old 0.5, new 0.0, R  0: 0.0, clipped 0.3: 0.09                -> 0.09 clipped
    #   old 0.0, new 1.0, R  0: 1.0, clipped 0.2: 0.04                -> 1.0
    # loss = 0.5 * (0.64 + 1.21 + 0.09 + 1.0) / 4 = 0.3675; clip fraction 2 / 4.
    old = torch.tensor([[1.0, 0.0, 0.5, 0.0, 9.0]])
    new = torch.tensor([[1.5, 0.1, 0.0, 1.0, -9.0]])
    returns = torch.tensor([[2.0, -1.0, 0.0, 0.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, clip_fraction = clipped_value_loss(new, old, returns, mask, 0.2)
    assert loss.item() == pytest.approx(0.3675, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(0.5)


def test_scale_multiplies_each_sequence():
    advantages = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.25, 4.0]])
    scaled = scale_sequence_advantages(advantages, torch.tensor([2.0, 0.5]))
    assert torch.equal(scaled, torch.tensor([[2.0, -4.0, 0.0], [0.25, 0.125, 2.0]]))


def test_scale_rejects_wrong_shape():
    with pytest.raises(ValueError, match="one factor per completion"):
        scale_sequence_advantages(torch.ones(2, 3), torch.ones(3))


def test_scale_rejects_nonpositive_alpha():
    with pytest.raises(ValueError, match="finite and positive"):
        scale_sequence_advantages(torch.ones(2, 3), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("minibatch_size", 3, "a divisor of batch_size"),
        ("gamma", 1.5, r"gamma is 1.5; allowed: a number in \[0, 1\]"),
        ("lam", -0.1, "lam is -0.1"),
        ("cliprange", 0, "cliprange is 0"),
        ("ppo_epochs", 0, "ppo_epochs is 0"),
        ("learning_rate", -1e-5, "learning_rate is -1e-05"),
        ("vf_coef", -1.0, "vf_coef is -1.0"),
        ("temperature", 0.0, "temperature is 0.0"),
        ("beta", -0.1, "beta is -0.1"),
    ],
)
def test_settings_invalid_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        PPOSettings(**{field: value})


def test_settings_accept_zero_learning_rate():
    assert PPOSettings(learning_rate=0.0).learning_rate == 0.0


def test_prompt_batches_cycle_prompts():
    batches = prompt_batches(["a", "b", "c"], batch_size=2, seed=0)
    first_six = [item for _ in range(3) for item in next(batches)]
    assert sorted(first_six) == ["a", "a", "b", "b", "c", "c"]


def test_prompt_batches_split_processes():
    on_0 = next(
        prompt_batches(list("abcd"), 2, seed=1, process_index=0, num_processes=2)
    )
    on_1 = next(
        prompt_batches(list("abcd"), 2, seed=1, process_index=1, num_processes=2)
    )
    assert sorted(on_0 + on_1) == ["a", "b", "c", "d"]


def _fixed_rollout() -> Rollout:
    completion_ids = torch.tensor([[5, 6, 2, 2], [7, 8, 9, 10], [11, 2, 2, 2]])
    mask = completion_mask(completion_ids, {2})
    generator = torch.Generator().manual_seed(0)
    return Rollout(
        records=[],
        completions=["a b", "c d e f", "g"],
        input_ids=completion_ids,
        attention_mask=mask.long(),
        completion_ids=completion_ids,
        mask=mask,
        logprobs=-torch.rand(3, 4, generator=generator),
        ref_logprobs=-torch.rand(3, 4, generator=generator),
        values=torch.randn(3, 4, generator=generator),
        scores=torch.tensor([1.0, -0.5, 0.25]),
    )


def test_ppo_s_scales_advantages_exactly():
    rollout = _fixed_rollout()
    alpha = torch.tensor([0.5, 2.0, 1.5])
    plain, plain_returns, _ = rollout_targets(rollout, PPOSettings())
    scaled, scaled_returns, _ = rollout_targets(rollout, PPOSettings(), alpha)
    assert torch.equal(scaled, plain * alpha[:, None])
    assert torch.equal(scaled_returns, plain_returns)


def test_ppo_advantages_whitened():
    rollout = _fixed_rollout()
    advantages, _, _ = rollout_targets(rollout, PPOSettings())
    real = advantages[rollout.mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std().item() == pytest.approx(1.0, abs=1e-4)
    assert bool((advantages[~rollout.mask.bool()] == 0).all())


def test_ppo_registered(plugins):
    assert plugins.get("optimizer", "ppo") is PPO


def test_ppo_preset():
    preset = read_registry_file()["presets"]["ppo"]
    assert preset == {"optimizer": "ppo", "scaler": "none"}


def test_settings_from_yaml_fields():
    settings = build_settings(
        PPOSettings,
        {"learning_rate": 1e-5, "beta": 0.1, "batch_size": 8, "gamma": 1},
        file="exp.yaml",
        field="training",
        component="optimizer 'ppo'",
    )
    assert settings.kl_coef == 0.1
    assert settings.gamma == 1.0


def test_settings_from_yaml_invalid():
    with pytest.raises(
        ConfigError, match=r"exp.yaml: field 'training.minibatch_size'.*minibatch_size is 3"
    ):
        build_settings(
            PPOSettings,
            {"batch_size": 8, "minibatch_size": 3},
            file="exp.yaml",
            field="training",
            component="optimizer 'ppo'",
        )
