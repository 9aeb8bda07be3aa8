"""Settings and training prompts of the ``ppo`` optimizer."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from drirl.components import OptimizerSettings, Record
from drirl.errors import DrirlError
from drirl.generation import chat_text

logger = logging.getLogger(__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, name: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{name} is {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class PPOSettings(OptimizerSettings):
    """Settings of the ``ppo`` optimizer.

    Each step samples one completion for each of ``batch_size`` prompts (per process),
    scores them, then runs ``ppo_epochs`` passes over that batch in minibatches of
    ``minibatch_size`` completions, one optimizer step per minibatch. ``beta`` is the
    coefficient of the per-token KL penalty against the frozen reference model.
    ``learning_rate`` 0 leaves the policy and value head unchanged, which gives a baseline
    run with the same sampling.

    Fields of PPO itself:

    - ``ppo_epochs``: passes over each rollout batch.
    - ``minibatch_size``: completions per optimizer step; must divide ``batch_size``.
    - ``gamma``: discount factor of GAE, in [0, 1].
    - ``lam``: lambda of GAE, in [0, 1]; 1 gives Monte Carlo returns minus the value.
    - ``cliprange``: epsilon of the clipped policy ratio, 1 - eps to 1 + eps.
    - ``cliprange_value``: how far a new value may move from the rollout's value.
    - ``vf_coef``: weight of the value loss in the total loss.
    - ``temperature``: sampling temperature of the rollouts.
    - ``max_grad_norm``: gradients are clipped to this global norm.
    """

    ppo_epochs: int = 4
    minibatch_size: int = 4
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    temperature: float = 1.0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        lr = self.learning_rate
        _require(
            _is_number(lr) and 0 <= lr < 1,
            "learning_rate",
            lr,
            "a number in [0, 1); 0 trains nothing",
        )
        for name in (
            "steps",
            "batch_size",
            "max_prompt_length",
            "max_completion_length",
            "ppo_epochs",
            "minibatch_size",
        ):
            value = getattr(self, name)
            _require(_is_count(value) and value >= 1, name, value, "an integer >= 1")
        _require(
            self.batch_size % self.minibatch_size == 0,
            "minibatch_size",
            self.minibatch_size,
            f"a divisor of batch_size ({self.batch_size}), so that every minibatch "
            "has the same size",
        )
        _require(
            _is_number(self.beta) and self.beta >= 0, "beta", self.beta, "a number >= 0"
        )
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            _require(
                _is_number(value) and 0 <= value <= 1, name, value, "a number in [0, 1]"
            )
        for name in ("cliprange", "cliprange_value", "temperature", "max_grad_norm"):
            value = getattr(self, name)
            _require(_is_number(value) and value > 0, name, value, "a number > 0")
        _require(
            _is_number(self.vf_coef) and self.vf_coef >= 0,
            "vf_coef",
            self.vf_coef,
            "a number >= 0",
        )

    @property
    def kl_coef(self) -> float:
        """The coefficient of the per-token KL penalty, which is ``beta``."""
        return float(self.beta)

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)


def train_prompts(
    records: Sequence[Record],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
) -> list[Record]:
    """Return the train-split records whose templated prompt fits ``max_prompt_length``.

    Benign look-alikes stay in, so that batches reward helpful responses to them. Without
    them, refusing every prompt is the cheapest way to a high reward.
    """
    train = [record for record in records if record.split == "train"]
    if not train:
        raise DrirlError(
            f"none of the {len(records)} records has split 'train'; PPO needs training "
            "prompts, so check the harm categories' data files"
        )
    if not any(record.kind == "benign" for record in train):
        logger.warning(
            "the training prompts contain no benign look-alikes; the policy may learn to "
            "refuse everything"
        )
    fitting = []
    too_long = []
    for record in train:
        text = chat_text(tokenizer, record.prompt)
        length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if length > max_prompt_length:
            too_long.append(record.id)
        else:
            fitting.append(record)
    if too_long:
        logger.warning(
            "left out %d training prompts longer than max_prompt_length=%d tokens: %s",
            len(too_long),
            max_prompt_length,
            ", ".join(too_long[:10]),
        )
    if not fitting:
        raise DrirlError(
            f"every training prompt is longer than max_prompt_length={max_prompt_length} "
            "tokens; raise max_prompt_length"
        )
    return fitting


def prompt_batches(
    records: Sequence[Record],
    batch_size: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
) -> Iterator[list[Record]]:
    """Yield this process's batches of prompts forever, reshuffled after each pass.

    The global batch of a step contains ``batch_size * num_processes`` prompts, drawn in
    order from a shuffled list; each process takes its own slice of it. A pass that ends
    inside a batch continues with the next shuffle, so the same prompt can appear twice
    in one batch when there are fewer prompts than completions per step.
    """
    order: list[Record] = []
    shuffle_round = 0
    global_size = batch_size * num_processes
    while True:
        while len(order) < global_size:
            shuffled = list(records)
            random.Random(seed + shuffle_round).shuffle(shuffled)
            order.extend(shuffled)
            shuffle_round += 1
        batch, order = order[:global_size], order[global_size:]
        start = process_index * batch_size
        yield batch[start : start + batch_size]
