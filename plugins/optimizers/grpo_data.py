"""Settings, training prompts and the reward function shared by ``grpo`` and ``grpo_s``."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from drirl.components import OptimizerSettings, Record, RewardScorer
from drirl.dataset import balanced_by_kind, with_harmful_share
from drirl.errors import DrirlError
from drirl.generation import chat_messages, chat_text
from drirl.kind_heads import score_with_kinds
from drirl.lora import lora_values

logger = logging.getLogger(__name__)

NONFINITE_POLICIES = ("raise", "mask")
REWARD_FUNCTION_NAME = "reward_model"


class NonFiniteRewardError(DrirlError, ValueError):
    """The reward scorer returned NaN or an infinite reward."""


def _require(condition: bool, name: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{name} is {value!r}; allowed: {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GRPOSettings(OptimizerSettings):
    """Settings of the ``grpo`` and ``grpo_s`` optimizers.

    ``batch_size`` counts completions, as TRL's ``per_device_train_batch_size`` does, so a
    step contains ``batch_size / num_generations`` prompts. ``nonfinite_rewards`` sets what
    a NaN or infinite reward does. With ``raise`` training stops with the prompt and value
    named. With ``mask`` that completion is left out of its group's statistics and gets
    advantage 0. With ``balance_kinds`` the train prompts of the rarer kind (harmful or
    benign) are repeated until both kinds are equally many, so benign look-alikes get as
    many groups as harmful prompts. ``harmful_share``, a number in (0, 1), repeats the
    harmful or the benign train prompts instead, until harmful ones make up that share.
    ``trl_args`` passes further GRPOConfig fields through unchanged (for example
    ``gradient_accumulation_steps`` or ``loss_type``). ``lora`` trains LoRA adapters
    instead of every weight (``drirl.lora`` lists its keys and defaults). Null, the
    default, trains every weight.
    """

    num_generations: int = 4
    temperature: float = 1.0
    logging_steps: int = 1
    nonfinite_rewards: str = "raise"
    balance_kinds: bool = False
    harmful_share: float | None = None
    trl_args: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        lr = self.learning_rate
        _require(
            _is_number(lr) and 0 < lr < 1, "learning_rate", lr, "a number in (0, 1)"
        )
        for name in (
            "steps",
            "batch_size",
            "max_prompt_length",
            "max_completion_length",
        ):
            value = getattr(self, name)
            _require(_is_count(value) and value >= 1, name, value, "an integer >= 1")
        _require(
            _is_number(self.beta) and self.beta >= 0, "beta", self.beta, "a number >= 0"
        )
        _require(
            _is_count(self.num_generations) and self.num_generations >= 2,
            "num_generations",
            self.num_generations,
            "an integer >= 2 (a group needs two completions to have a spread)",
        )
        _require(
            self.batch_size % self.num_generations == 0,
            "batch_size",
            self.batch_size,
            f"a multiple of num_generations ({self.num_generations}), because TRL's batch "
            "size counts completions and each prompt's group must fit in one batch",
        )
        _require(
            _is_number(self.temperature) and self.temperature > 0,
            "temperature",
            self.temperature,
            "a number > 0",
        )
        _require(
            _is_count(self.logging_steps) and self.logging_steps >= 1,
            "logging_steps",
            self.logging_steps,
            "an integer >= 1",
        )
        _require(
            self.nonfinite_rewards in NONFINITE_POLICIES,
            "nonfinite_rewards",
            self.nonfinite_rewards,
            ", ".join(NONFINITE_POLICIES),
        )
        _require(
            isinstance(self.balance_kinds, bool),
            "balance_kinds",
            self.balance_kinds,
            "true or false",
        )
        share = self.harmful_share
        _require(
            share is None or (_is_number(share) and 0 < share < 1),
            "harmful_share",
            share,
            "null or a number in (0, 1)",
        )
        _require(
            share is None or not self.balance_kinds,
            "harmful_share",
            share,
            "null when balance_kinds is true, because balance_kinds sets the share to 0.5",
        )
        _require(
            isinstance(self.trl_args, dict),
            "trl_args",
            self.trl_args,
            "a mapping of GRPOConfig field names to values",
        )
        lora_values(self.lora)

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)


def train_records(
    records: Sequence[Record],
    seed: int,
    *,
    balance_kinds: bool = False,
    harmful_share: float | None = None,
) -> list[Record]:
    """Return the train split, harmful and benign alike, shuffled with ``seed``.

    Benign look-alikes stay in the training data so that batches reward helpful responses
    to them. Without them, refusing every prompt is the cheapest way to a high reward.
    With ``balance_kinds`` the rarer kind's records are repeated to match the other's count,
    and with ``harmful_share`` the kind that falls short of that share is repeated.
    """
    train = [record for record in records if record.split == "train"]
    if not train:
        raise DrirlError(
            f"none of the {len(records)} records has split 'train'; GRPO needs training "
            "prompts, so check the harm categories' data files"
        )
    if not any(record.kind == "benign" for record in train):
        logger.warning(
            "the training prompts contain no benign look-alikes; the policy may learn to "
            "refuse everything"
        )
    if balance_kinds:
        train = balanced_by_kind(train)
    if harmful_share is not None:
        train = with_harmful_share(train, harmful_share)
    random.Random(seed).shuffle(train)
    return train


def build_train_dataset(
    records: Sequence[Record],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
    seed: int,
    *,
    balance_kinds: bool = False,
    harmful_share: float | None = None,
) -> Dataset:
    """Build TRL's conversational prompt dataset from the train split.

    ``prompt`` contains the chat messages, so TRL applies the chat template. The extra columns
    (``prompt_text``, ``category``, ``demonstration``, ``kind``) reach the reward function
    and the difficulty scaler. TRL 1.16 no longer truncates prompts, so prompts whose
    templated length exceeds ``max_prompt_length`` tokens are left out, with a warning.
    """
    rows: dict[str, list[Any]] = {
        "prompt": [],
        "prompt_text": [],
        "category": [],
        "demonstration": [],
        "kind": [],
    }
    too_long = []
    for record in train_records(
        records, seed, balance_kinds=balance_kinds, harmful_share=harmful_share
    ):
        length = len(
            tokenizer(chat_text(tokenizer, record.prompt), add_special_tokens=False)[
                "input_ids"
            ]
        )
        if length > max_prompt_length:
            too_long.append(record.id)
            continue
        rows["prompt"].append(chat_messages(record.prompt))
        rows["prompt_text"].append(record.prompt)
        rows["category"].append(record.category)
        rows["demonstration"].append(record.demonstration)
        rows["kind"].append(record.kind)
    if too_long:
        logger.warning(
            "left out %d training prompts longer than max_prompt_length=%d tokens: %s",
            len(too_long),
            max_prompt_length,
            ", ".join(too_long[:10]),
        )
    if not rows["prompt"]:
        raise DrirlError(
            f"every training prompt is longer than max_prompt_length={max_prompt_length} "
            "tokens; raise max_prompt_length"
        )
    return Dataset.from_dict(rows)


def completion_text(completion: Any) -> str:
    """Return the text of a TRL completion: a string, or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):  # content blocks
            content = "".join(
                block.get("text", "") for block in content if isinstance(block, dict)
            )
        parts.append(content or "")
    return "".join(parts)


def make_reward_function(
    scorer: RewardScorer, nonfinite_rewards: str = "raise"
) -> Callable[..., list[float | None]]:
    """Wrap a scorer as a TRL reward function that routes each prompt by its category.

    A scorer with heads per prompt kind also gets each prompt's ``kind`` column.

    With ``nonfinite_rewards="mask"`` a NaN or infinite reward is returned as None, which
    TRL treats as unscorable: the completion is left out of its group's mean and spread and
    gets advantage 0. With ``"raise"`` it stops training with a ``NonFiniteRewardError``.
    """
    if nonfinite_rewards not in NONFINITE_POLICIES:
        raise ValueError(
            f"nonfinite_rewards is {nonfinite_rewards!r}; allowed: {', '.join(NONFINITE_POLICIES)}"
        )

    def reward_model(
        prompts: list[Any],
        completions: list[Any],
        prompt_text: list[str],
        category: list[str],
        **kwargs: Any,
    ) -> list[float | None]:
        texts = [completion_text(completion) for completion in completions]
        kinds = kwargs.get("kind")
        scores = score_with_kinds(
            scorer,
            list(prompt_text),
            texts,
            list(category),
            list(kinds) if kinds is not None else None,
        )
        values = (
            torch.as_tensor(scores, dtype=torch.float32)
            .detach()
            .cpu()
            .reshape(-1)
            .tolist()
        )
        if len(values) != len(texts):
            raise ValueError(
                f"the reward scorer returned {len(values)} rewards for {len(texts)} completions; "
                "it must return one reward per (prompt, response) pair"
            )
        bad = [index for index, value in enumerate(values) if not math.isfinite(value)]
        if not bad:
            return values
        if nonfinite_rewards == "raise":
            first = bad[0]
            raise NonFiniteRewardError(
                f"the reward scorer returned {values[first]} for category "
                f"{category[first]!r}, prompt {prompt_text[first][:80]!r} "
                f"({len(bad)} of {len(values)} rewards in this batch are not finite); check the "
                "reward model, or set nonfinite_rewards: mask to give such completions "
                "advantage 0"
            )
        logger.warning(
            "masked %d non-finite rewards of %d; those completions get advantage 0",
            len(bad),
            len(values),
        )
        masked = set(bad)
        return [
            None if index in masked else value for index, value in enumerate(values)
        ]

    reward_model.__name__ = REWARD_FUNCTION_NAME
    return reward_model
