"""``ScaledDPOTrainer``: TRL's DPOTrainer with a difficulty-scaled beta per pair (DPO-S).

How it plugs into TRL 1.16. ``DPOTrainer.compute_loss`` calls ``_compute_loss(model,
inputs, return_outputs)``, which computes the whole loss in one method. It forwards the
batch, whose first B rows are prompt + chosen and last B rows prompt + rejected. It sums the
per-token log-probabilities of the response tokens into ``chosen_logps`` and
``rejected_logps`` of shape (B,) and subtracts the reference model's sums to get
``chosen_logratios`` and ``rejected_logratios``. For ``loss_type="sigmoid"`` the per-pair
loss is ``-F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios))``, and the
batch loss is its mean. TRL has no smaller method that computes the loss, so this trainer
overrides ``compute_loss``. It computes alpha of shape (B,), sets ``self.beta`` to the
tensor ``beta * alpha`` for that one call, and restores the float afterwards. The
product with the (B,) log-ratio difference is element-wise, so pair i's loss becomes

    -log sigmoid(beta * alpha_i * (logratio_chosen_i - logratio_rejected_i)).

Why beta: DPO's implicit reward of a response is ``beta * logratio``, and beta sets how
far the policy may move from the reference for that preference. With ``margin_i =
logratio_chosen_i - logratio_rejected_i`` the gradient of pair i's loss is
``-beta * alpha_i * sigmoid(-beta * alpha_i * margin_i)`` times the gradient of
``margin_i``. So a pair with alpha above 1 gets a larger gradient while its margin is
small, and its loss flattens out at a smaller margin. The logged ``rewards/chosen``,
``rewards/rejected`` and ``rewards/margins`` use the same per-pair beta.

Alpha comes from the difficulty scaler, called once per batch with a ``ScalerBatch`` whose
completions are the rejected responses and whose demonstrations are the chosen ones:

- ``clip`` compares the sentences of rejected and chosen (data-level hardness);
- ``reward_gap`` reads ``rewards``, the implicit rewards ``beta * logratio`` of the
  rejected responses, and scores the chosen responses with the same implicit reward
  through ``batch.scorer``. Its gap is therefore ``r(rejected) - r(chosen)``, the negative
  implicit reward margin (model-level responsiveness).

The implicit rewards cost one extra forward pass of the policy and one of the reference
model over the batch, without gradients, on every step with a scaler. ``scaler_groups``
sets the groups the scaler normalises within. With ``batch``, ``clip`` gives
``sigmoid(delta_i) / sigmoid(mean delta)`` per pair, while ``reward_gap`` gives one factor
for the whole batch. With ``pair``, ``reward_gap`` gives ``sigmoid(reference) /
sigmoid(gap_i)`` per pair, while ``clip`` gives 1, because each group has one member.

NOTE: with ``pair`` groups, a pair whose implicit margin exceeds the batch reference gets
alpha above 1. That mirrors GRPO-S, where the completion that lags its demonstration
most gets more weight, but no experiment here has yet shown that this direction helps DPO.

Assumptions: full fine-tuning (no PEFT adapter), ``loss_type=["sigmoid"]`` and
``f_divergence_type="reverse_kl"``. The constructor checks all three.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer

from drirl.components import DifficultyScaler, ScalerBatch
from drirl.scaling import alpha_statistics

logger = logging.getLogger(__name__)


class ImplicitRewardScorer:
    """DPO's implicit rewards of one batch's chosen responses, looked up by (prompt, response)."""

    def __init__(self, rewards: dict[tuple[str, str], float]) -> None:
        self.rewards = rewards

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        categories: Sequence[str],
    ) -> torch.Tensor:
        """Return the implicit reward of each (prompt, response) of the current batch."""
        values = []
        for prompt, response in zip(prompts, responses, strict=True):
            key = (prompt, response)
            if key not in self.rewards:
                raise KeyError(
                    "the implicit-reward scorer contains only the chosen responses of the "
                    f"current DPO batch; no reward for prompt {prompt[:80]!r}"
                )
            values.append(self.rewards[key])
        return torch.tensor(values, dtype=torch.float32)


def check_factors(alpha: torch.Tensor, pairs: int) -> None:
    """Raise ValueError unless alpha has one finite, positive factor per pair."""
    if alpha.shape != (pairs,):
        raise ValueError(
            f"the difficulty scaler returned shape {tuple(alpha.shape)} for {pairs} "
            "preference pairs; a scaler must return one factor per pair"
        )
    bad = ~torch.isfinite(alpha) | (alpha <= 0)
    if bool(bad.any()):
        raise ValueError(
            f"difficulty factors must be finite and positive, got {alpha[bad].tolist()[:5]}; "
            "a zero or negative factor would erase or flip the preference"
        )


class ScaledDPOTrainer(DPOTrainer):
    """DPO whose beta is multiplied, pair by pair, by difficulty factors from a scaler."""

    def __init__(
        self,
        *args: Any,
        scaler: DifficultyScaler,
        scaler_groups: str = "batch",
        **kwargs: Any,
    ) -> None:
        self.scaler = scaler
        self.scaler_groups = scaler_groups
        super().__init__(*args, **kwargs)
        if list(self.loss_types) != ["sigmoid"]:
            raise ValueError(
                f"loss_type is {self.loss_types!r}; DPO-S scales the beta of the sigmoid "
                "loss only, so set loss_type to ['sigmoid'] or use scaler 'none'"
            )
        if self.f_divergence_type != "reverse_kl":
            raise ValueError(
                f"f_divergence_type is {self.f_divergence_type!r}; DPO-S supports only "
                "'reverse_kl', where the implicit reward is beta * logratio"
            )
        if is_peft_model(self.model):
            raise ValueError(
                "DPO-S does not support PEFT models: its policy pass would run with the "
                "adapter disabled; train all parameters or use scaler 'none'"
            )
        self._prompts = self._prompt_lookup()

    def _prompt_lookup(self) -> dict[tuple[int, ...], tuple[str, str]]:
        # TRL keeps the dataset's own columns next to the token ids it adds.
        dataset = self.train_dataset
        if dataset is None or "prompt_text" not in dataset.column_names:
            return {}
        return {
            tuple(ids): (text, category)
            for ids, text, category in zip(
                dataset["prompt_ids"], dataset["prompt_text"], dataset["category"]
            )
        }

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        alpha = self.pair_factors(model, inputs)
        base_beta = self.beta
        self.beta = base_beta * alpha.to(self.accelerator.device)
        try:
            return super().compute_loss(
                model, inputs, return_outputs, num_items_in_batch
            )
        finally:
            self.beta = base_beta

    def pair_factors(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """Return alpha, one float32 factor per preference pair of the batch, on CPU."""
        batch = self.scaler_batch(model, inputs)
        alpha = self.scaler.factors(batch).detach().float().cpu()
        check_factors(alpha, len(batch.completions))
        self._record_metrics(alpha)
        return alpha

    def scaler_batch(self, model: Any, inputs: dict[str, Any]) -> ScalerBatch:
        """Build the ScalerBatch: rejected as completions, chosen as demonstrations."""
        input_ids = inputs["input_ids"]
        completion = inputs["completion_mask"].bool()
        prompt = inputs["attention_mask"].bool() & ~completion
        pairs = input_ids.shape[0] // 2
        tokenizer = self._tokenizer

        def response(row: int) -> str:
            ids = input_ids[row][completion[row]]
            return tokenizer.decode(ids, skip_special_tokens=True).strip()

        prompts, categories, chosen, rejected = [], [], [], []
        for index in range(pairs):
            prompt_ids = tuple(input_ids[index][prompt[index]].tolist())
            decoded = tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
            text, category = self._prompts.get(prompt_ids, (decoded, ""))
            prompts.append(text)
            categories.append(category)
            chosen.append(response(index))
            rejected.append(response(pairs + index))

        chosen_rewards, rejected_rewards = self.implicit_rewards(model, inputs)
        scorer = ImplicitRewardScorer(
            dict(zip(zip(prompts, chosen), chosen_rewards.tolist()))
        )
        if self.scaler_groups == "pair":
            group_ids = torch.arange(pairs)
        else:
            group_ids = torch.zeros(pairs, dtype=torch.long)
        return ScalerBatch(
            prompts=prompts,
            completions=rejected,
            demonstrations=chosen,
            categories=categories,
            group_ids=group_ids,
            rewards=rejected_rewards,
            scorer=scorer,
        )

    @torch.no_grad()
    def implicit_rewards(
        self, model: Any, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``beta * (logp_policy - logp_reference)`` of chosen and of rejected, on CPU."""
        # compute_ref_log_probs runs a no-grad forward of the model it is given, so it
        # also serves the policy pass (the constructor rules out PEFT adapters).
        policy_chosen, policy_rejected = self.compute_ref_log_probs(model, inputs)
        if "ref_chosen_logps" in inputs:
            ref_chosen = inputs["ref_chosen_logps"]
            ref_rejected = inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(
                self.ref_model, inputs
            )
        beta = float(self.beta)
        chosen = beta * (policy_chosen.float() - ref_chosen.float().to(policy_chosen))
        rejected = beta * (
            policy_rejected.float() - ref_rejected.float().to(policy_rejected)
        )
        return chosen.cpu(), rejected.cpu()

    def _record_metrics(self, alpha: torch.Tensor) -> None:
        # DPOTrainer.log averages each list in _metrics over the logging interval and adds
        # the result to the log entry, so these keys reach trainer.state.log_history.
        mode = "train" if self.model.training else "eval"
        statistics = alpha_statistics(alpha)
        statistics.update(self.scaler.statistics())
        for key, value in statistics.items():
            self._metrics[mode][key].append(float(value))
