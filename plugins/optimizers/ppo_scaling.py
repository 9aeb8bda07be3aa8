"""PPO-S: difficulty factors for a PPO rollout batch.

PPO samples one completion per prompt, so every completion is its own group in the
``ScalerBatch``. The scaler receives the whole batch of every process, because scalers such
as ``reward_gap`` compare each completion with batch statistics. Each process then keeps
the factors of its own completions.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from drirl.components import DifficultyScaler, RewardScorer, ScalerBatch
from drirl.plugins.optimizers.ppo_rollout import Rollout


def scaler_batch(
    accelerator: Accelerator, rollout: Rollout, scorer: RewardScorer | None
) -> ScalerBatch:
    """Build the ScalerBatch of the rollouts of every process, in process order."""

    def gathered(values: list) -> list:
        if accelerator.num_processes == 1:
            return values
        return gather_object(values)

    completions = gathered(list(rollout.completions))
    scores = accelerator.gather(rollout.scores.float()).detach().cpu()
    return ScalerBatch(
        prompts=gathered([record.prompt for record in rollout.records]),
        completions=completions,
        demonstrations=gathered([record.demonstration for record in rollout.records]),
        categories=gathered([record.category for record in rollout.records]),
        group_ids=torch.arange(len(completions)),
        rewards=scores,
        scorer=scorer,
    )


def rollout_alpha(
    accelerator: Accelerator,
    scaler: DifficultyScaler,
    rollout: Rollout,
    scorer: RewardScorer | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return alpha for this process's completions (B,) and for the whole batch (N,)."""
    batch = scaler_batch(accelerator, rollout, scorer)
    alpha = scaler.factors(batch).detach().float().cpu()
    if alpha.shape != (len(batch.completions),):
        raise ValueError(
            f"scaler {scaler.name!r} returned shape {tuple(alpha.shape)}; expected "
            f"({len(batch.completions)},), one factor per completion"
        )
    start = accelerator.process_index * len(rollout)
    return alpha[start : start + len(rollout)], alpha
