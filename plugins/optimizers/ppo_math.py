"""The arithmetic of PPO on token sequences, as pure tensor functions.

Shapes: B sequences, L completion tokens. ``mask`` is 1 on the real tokens of each
completion (up to and including its first stop token) and 0 on the padding after it. Every
function here ignores what padded positions contain and returns 0 there.

Sources of the formulas: GAE from Schulman et al. 2016, "High-Dimensional Continuous
Control Using Generalized Advantage Estimation"; the clipped policy and value losses and
the per-token KL penalty from Ziegler et al. 2019, "Fine-Tuning Language Models from
Human Preferences", and Ouyang et al. 2022 (InstructGPT).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from drirl.scaling import scale_advantages

WHITEN_EPS = 1e-8

Reduce = Callable[[torch.Tensor], torch.Tensor]


def completion_mask(
    completion_ids: torch.Tensor, stop_token_ids: Collection[int]
) -> torch.Tensor:
    """Return a float mask (B, L) of the real completion tokens.

    A completion ends at its first stop token, which counts as real, because emitting it
    is an action the policy takes. Everything after it is padding. When the pad token is
    also the eos token (as in SmolLM2), the padding cannot be distinguished by its id, so
    only the position of the first stop token decides. A completion without a stop token
    was cut at the maximum length and is real throughout.
    """
    if completion_ids.dim() != 2:
        raise ValueError(
            f"completion_ids has shape {tuple(completion_ids.shape)}; expected (B, L)"
        )
    if not stop_token_ids:
        raise ValueError("stop_token_ids is empty; pass the tokenizer's eos token id")
    stops = torch.tensor(sorted(stop_token_ids), device=completion_ids.device)
    is_stop = torch.isin(completion_ids, stops).long()
    # The number of stop tokens strictly before each position; a token is real while it is 0.
    stops_before = torch.cumsum(is_stop, dim=1) - is_stop
    return (stops_before == 0).float()


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Return the index of the last real token of each row of a prefix mask, shape (B,).

    Every row needs at least one real token; a generated completion always has one.
    """
    lengths = mask.sum(dim=1).long()
    if bool((lengths == 0).any()):
        raise ValueError("a completion has no real token; every row of mask needs a 1")
    return lengths - 1


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Return the per-token rewards (B, L): ``-kl_coef * kl_t`` plus the score at the end.

    The sequence reward from the scorer is added on the last real token of each
    completion, so GAE propagates it back to the earlier tokens.
    """
    rewards = -kl_coef * kl * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return GAE advantages and the value targets (returns), both (B, L).

    delta_t = r_t + gamma * V_{t+1} - V_t, and A_t = delta_t + gamma * lam * A_{t+1}. The
    state after the last real token is terminal, so its value and advantage count as 0.
    """
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        next_value = values[:, t]
        next_advantage = advantage
    returns = (advantages + values) * mask
    return advantages, returns


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the mean of ``values`` over the positions where ``mask`` is 1.

    Padded positions are left out with ``where``, so a NaN there cannot reach the mean.
    """
    real = torch.where(mask.bool(), values, torch.zeros_like(values))
    return real.sum() / mask.sum().clamp(min=1)


def whiten(
    values: torch.Tensor, mask: torch.Tensor, reduce: Reduce | None = None
) -> torch.Tensor:
    """Return ``(values - mean) / sqrt(var + 1e-8)`` over the real tokens, 0 elsewhere.

    The variance is unbiased (Bessel's correction). ``reduce`` sums a tensor over
    processes, so that every process whitens with the statistics of the whole batch.
    """
    real = torch.where(mask.bool(), values, torch.zeros_like(values))
    moments = torch.stack([real.sum(), (real * real).sum(), mask.sum()])
    if reduce is not None:
        moments = reduce(moments)
    total, total_squares, count = moments
    if count < 2:
        raise ValueError(
            f"whitening needs at least 2 real tokens, got {int(count)}; raise batch_size"
        )
    mean = total / count
    variance = (total_squares / count - mean**2).clamp(min=0) * count / (count - 1)
    whitened = (values - mean) * torch.rsqrt(variance + WHITEN_EPS)
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def scale_sequence_advantages(
    advantages: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Multiply every token advantage of sequence i by ``alpha[i]`` (PPO-S).

    A non-finite or non-positive alpha raises ValueError (see ``scale_advantages``).
    """
    if alpha.shape != advantages.shape[:1]:
        raise ValueError(
            f"alpha has shape {tuple(alpha.shape)} for {advantages.shape[0]} sequences; "
            "a scaler must return one factor per completion"
        )
    per_token = alpha.to(advantages.device)[:, None].expand_as(advantages)
    return scale_advantages(advantages, per_token)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the clipped surrogate loss and the fraction of tokens where clipping acted.

    loss = mean over real tokens of max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction.detach()


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the clipped value loss and the fraction of tokens where clipping acted.

    The new value may move at most ``cliprange_value`` from the rollout's value, and the
    loss is 0.5 * mean over real tokens of max((V - R)^2, (V_clipped - R)^2).
    """
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clip_fraction.detach()


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Return log p(token) under ``softmax(logits / temperature)``, shape (B, L).

    Dividing by the sampling temperature makes the probabilities those the tokens were
    sampled from, so the PPO ratio compares like with like.
    """
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(logprobs, 2, tokens.unsqueeze(-1)).squeeze(-1)
