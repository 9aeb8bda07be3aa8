"""One PPO update: per-token rewards, GAE, whitening, then epochs of clipped minibatch steps."""

from __future__ import annotations

from collections import defaultdict

import torch
from accelerate import Accelerator

from drirl.plugins.optimizers.ppo_data import PPOSettings
from drirl.plugins.optimizers.ppo_math import (
    clipped_policy_loss,
    clipped_value_loss,
    generalized_advantages,
    masked_mean,
    scale_sequence_advantages,
    token_rewards,
    whiten,
)
from drirl.plugins.optimizers.ppo_rollout import Rollout


def rollout_targets(
    rollout: Rollout,
    settings: PPOSettings,
    alpha: torch.Tensor | None = None,
    accelerator: Accelerator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the whitened (and, with alpha, scaled) advantages, the returns and the KL.

    The KL is the per-token estimate log pi(y_t) - log pi_ref(y_t), (B, L). PPO-S
    multiplies the whitened advantages of sequence i by ``alpha[i]``, after whitening, so
    whitening does not undo the scaling.
    """
    mask = rollout.mask
    kl = (rollout.logprobs - rollout.ref_logprobs) * mask
    rewards = token_rewards(rollout.scores, kl, mask, settings.kl_coef)
    advantages, returns = generalized_advantages(
        rewards, rollout.values, mask, settings.gamma, settings.lam
    )
    reduce = None
    if accelerator is not None and accelerator.num_processes > 1:

        def reduce(tensor: torch.Tensor) -> torch.Tensor:
            return accelerator.reduce(tensor, reduction="sum")

    advantages = whiten(advantages, mask, reduce)
    if alpha is not None:
        advantages = scale_sequence_advantages(advantages, alpha)
    return advantages, returns, kl


def ppo_epochs(
    accelerator: Accelerator,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    settings: PPOSettings,
    generator: torch.Generator,
) -> dict[str, float]:
    """Run ``ppo_epochs`` passes of minibatch steps; return the mean of each loss statistic.

    ``module`` is the prepared ``PolicyWithValueHead``. Minibatch order is drawn from
    ``generator`` so that runs with the same seed see the same order.
    """
    module.train()
    totals: dict[str, list[float]] = defaultdict(list)
    size = len(rollout)
    for _ in range(settings.ppo_epochs):
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, settings.minibatch_size):
            index = order[start : start + settings.minibatch_size].to(
                rollout.input_ids.device
            )
            statistics = _minibatch_step(
                accelerator,
                module,
                optimizer,
                rollout,
                advantages,
                returns,
                settings,
                index,
            )
            for key, value in statistics.items():
                totals[key].append(value)
    return {key: sum(values) / len(values) for key, values in totals.items()}


def _minibatch_step(
    accelerator: Accelerator,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    settings: PPOSettings,
    index: torch.Tensor,
) -> dict[str, float]:
    mask = rollout.mask[index]
    logprobs, values = module(
        rollout.input_ids[index],
        rollout.attention_mask[index],
        rollout.completion_ids[index],
        settings.temperature,
    )
    old_logprobs = rollout.logprobs[index]
    policy_loss, clip_fraction = clipped_policy_loss(
        logprobs, old_logprobs, advantages[index], mask, settings.cliprange
    )
    value_loss, value_clip_fraction = clipped_value_loss(
        values,
        rollout.values[index],
        returns[index],
        mask,
        settings.cliprange_value,
    )
    loss = policy_loss + settings.vf_coef * value_loss
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the PPO loss is {loss.item()} (policy loss {policy_loss.item()}, value loss "
            f"{value_loss.item()}); lower learning_rate, or check the rewards' scale"
        )

    optimizer.zero_grad()
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(module.parameters(), settings.max_grad_norm)
    optimizer.step()

    with torch.no_grad():
        log_ratio = logprobs.detach() - old_logprobs
        approx_kl = masked_mean(0.5 * log_ratio**2, mask)
    return {
        "loss": loss.item(),
        "policy_loss": policy_loss.item(),
        "value_loss": value_loss.item(),
        "clip_fraction": clip_fraction.item(),
        "value_clip_fraction": value_clip_fraction.item(),
        "approx_kl": approx_kl.item(),
    }
