"""``ScaledGRPOTrainer``: TRL's GRPOTrainer with difficulty-scaled advantages (GRPO-S).

TRL 1.16 computes the group-normalised advantages in ``_generate_and_score_completions``
and returns them in the batch dict under ``"advantages"``. ``_prepare_inputs`` then
shuffles and splits that dict for the optimisation steps. This trainer overrides two
methods and leaves the rest of TRL (generation, KL term, clipped loss, logging) unchanged:

- ``_calculate_rewards`` keeps the rows, decoded completions and rewards of the batch;
- ``_generate_and_score_completions`` calls TRL, then multiplies the returned advantages by
  alpha from the difficulty scaler, after normalisation and before the shuffle.

Assumptions: prompts come in groups of ``num_generations`` consecutive rows, as TRL's
``RepeatSampler`` yields them, so completion i belongs to group ``i // num_generations``.
Advantages use TRL's default ``multi_objective_aggregation="sum_then_normalize"``, which
the constructor checks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from drirl.components import DifficultyScaler, RewardScorer, ScalerBatch
from drirl.plugins.optimizers.grpo_data import completion_text
from drirl.scaling import (
    alpha_statistics,
    scale_advantages,
    zero_spread_fraction,
    zero_spread_groups,
)

logger = logging.getLogger(__name__)

ZERO_SPREAD_METRIC = "frac_groups_zero_spread"


class ScaledGRPOTrainer(GRPOTrainer):
    """GRPO whose normalised advantages are multiplied by per-completion difficulty factors."""

    def __init__(
        self,
        *args: Any,
        scaler: DifficultyScaler,
        scorer: RewardScorer | None = None,
        **kwargs: Any,
    ) -> None:
        self.scaler = scaler
        self.scorer = scorer
        self._scored_batch: (
            tuple[list[dict[str, Any]], list[Any], torch.Tensor] | None
        ) = None
        super().__init__(*args, **kwargs)
        if self.args.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "multi_objective_aggregation is "
                f"{self.args.multi_objective_aggregation!r}; GRPO-S supports only "
                "'sum_then_normalize', where advantages are normalised per prompt group"
            )

    def _calculate_rewards(
        self,
        inputs: list[dict[str, Any]],
        prompts: list[Any],
        completions: list[Any],
        completion_ids_list: list[list[int]],
    ) -> torch.Tensor:
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._scored_batch = (inputs, completions, rewards_per_func)
        return rewards_per_func

    def _generate_and_score_completions(
        self, inputs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        if self._scored_batch is None:
            raise RuntimeError("TRL did not call _calculate_rewards for this batch")
        rows, completions, rewards_per_func = self._scored_batch
        self._scored_batch = None

        rewards = self._combined_rewards(rewards_per_func)
        batch = self._scaler_batch(rows, completions, rewards)
        alpha = self.scaler.factors(batch).detach().float().cpu()
        zero_spread = zero_spread_groups(rewards.cpu(), batch.group_ids)

        local = slice(
            self.accelerator.process_index * len(rows),
            (self.accelerator.process_index + 1) * len(rows),
        )
        advantages = output["advantages"]
        # TRL divides (r - mean) by (std + 1e-4). In a group of equal rewards a rounding error
        # in the mean would give a small non-zero advantage, so such groups get exactly 0.
        flat = zero_spread[local].to(advantages.device)
        advantages = torch.where(flat, torch.zeros_like(advantages), advantages)
        output["advantages"] = scale_advantages(
            advantages, alpha[local].to(advantages.device)
        )

        self._record_metrics(alpha, rewards, batch.group_ids)
        return output

    def _combined_rewards(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        return rewards.detach().float().cpu()

    def _scaler_batch(
        self, rows: list[dict[str, Any]], completions: list[Any], rewards: torch.Tensor
    ) -> ScalerBatch:
        def column(name: str) -> list[Any]:
            return gather_object([row[name] for row in rows])

        texts = gather_object(
            [completion_text(completion) for completion in completions]
        )
        group_ids = torch.arange(len(texts)) // self.num_generations
        return ScalerBatch(
            prompts=column("prompt_text"),
            completions=texts,
            demonstrations=column("demonstration"),
            categories=column("category"),
            group_ids=group_ids,
            rewards=rewards,
            scorer=self.scorer,
            kinds=column("kind") if rows and "kind" in rows[0] else None,
        )

    def _record_metrics(
        self, alpha: torch.Tensor, rewards: torch.Tensor, group_ids: torch.Tensor
    ) -> None:
        # TRL averages each list in _metrics over the logging interval and adds the result
        # to the log entry, so these keys reach trainer.state.log_history.
        metrics = self._metrics["train"]
        statistics = alpha_statistics(alpha)
        statistics.update(self.scaler.statistics())
        for key, value in statistics.items():
            metrics[key].append(float(value))
        metrics[ZERO_SPREAD_METRIC].append(zero_spread_fraction(rewards, group_ids))
