"""Helpers shared by the ``sft`` and ``dpo`` optimizers: settings checks, TRL config, saving.

Both optimizers train on chat conversations whose prompt ends with the chat template's
generation prompt. A conversation longer than the token budget ``max_prompt_length +
max_completion_length`` is left out before TRL sees it. TRL's ``max_length`` is set to
the same budget, so its truncation cuts nothing and every trained response keeps its
end-of-turn token.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from drirl.components import Record, RunContext
from drirl.errors import ConfigError, DrirlError
from drirl.generation import chat_messages

logger = logging.getLogger(__name__)


def require(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise ValueError naming the field, its value and the allowed values."""
    if not condition:
        raise ValueError(f"{name} is {value!r}; allowed: {allowed}")


def is_count(value: Any) -> bool:
    """Return whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Return whether ``value`` is an int or float and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_common_settings(settings: Any) -> None:
    """Validate the fields that ``sft`` and ``dpo`` settings share."""
    lr = settings.learning_rate
    require(is_number(lr) and 0 < lr < 1, "learning_rate", lr, "a number in (0, 1)")
    for name in (
        "steps",
        "batch_size",
        "max_prompt_length",
        "max_completion_length",
        "logging_steps",
    ):
        value = getattr(settings, name)
        require(is_count(value) and value >= 1, name, value, "an integer >= 1")
    require(
        isinstance(settings.trl_args, dict),
        "trl_args",
        settings.trl_args,
        "a mapping of TRL config field names to values",
    )


def check_trl_args(
    trl_args: dict[str, Any], config_cls: type, managed: Sequence[str]
) -> None:
    """Raise ConfigError for a ``trl_args`` key that the TRL config lacks or drirl sets."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(trl_args) - known)
    if unknown:
        raise ConfigError(
            f"unknown {config_cls.__name__} field(s) {', '.join(unknown)} in trl_args; "
            f"see trl.{config_cls.__name__} (trl 1.16) for the accepted fields",
            field="training.trl_args",
        )
    overlap = sorted(set(trl_args) & set(managed))
    if overlap:
        raise ConfigError(
            f"trl_args may not set {', '.join(overlap)}; set them as optimizer settings",
            field="training.trl_args",
        )


def base_config_values(ctx: RunContext) -> dict[str, Any]:
    """Return TRL config values for fp32 training without checkpoints or trackers.

    TRL configs default to bf16 and gradient checkpointing, which fail or slow down on CPU.
    """
    return {
        "use_cpu": ctx.device == "cpu",
        "bf16": False,
        "fp16": False,
        # transformers 5.25 renamed gradient_checkpointing; setting both avoids its warning.
        "activation_checkpointing": False,
        "gradient_checkpointing": False,
        "report_to": [],
        "save_strategy": "no",
    }


def train_split(records: Sequence[Record], optimizer: str) -> list[Record]:
    """Return the train split, raising DrirlError when it is empty."""
    train = [record for record in records if record.split == "train"]
    if not train:
        raise DrirlError(
            f"none of the {len(records)} records has split 'train'; the {optimizer} "
            "optimizer needs training data, so check the harm categories' data files"
        )
    return train


def conversation_lengths(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str
) -> tuple[int, int]:
    """Return the token counts of the templated prompt and of the whole conversation.

    The prompt is rendered with the generation prompt, as TRL renders it for training.
    """
    messages = chat_messages(prompt)
    prompt_text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], tokenize=False
    )
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    return len(prompt_ids), len(full_ids)


def fits_budget(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    responses: Sequence[str],
    max_prompt_length: int,
    max_completion_length: int,
) -> bool:
    """Return whether the prompt and each conversation with a response fit their budgets."""
    for response in responses:
        prompt_length, total = conversation_lengths(tokenizer, prompt, response)
        if prompt_length > max_prompt_length:
            return False
        if total > max_prompt_length + max_completion_length:
            return False
    return True


def warn_left_out(ids: Sequence[str], settings: Any, what: str) -> None:
    """Log the examples left out because they exceed the token budget."""
    if not ids:
        return
    logger.warning(
        "left out %d %s longer than max_prompt_length=%d or max_prompt_length + "
        "max_completion_length=%d tokens: %s",
        len(ids),
        what,
        settings.max_prompt_length,
        settings.max_prompt_length + settings.max_completion_length,
        ", ".join(ids[:10]),
    )
