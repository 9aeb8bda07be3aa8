"""Settings and preference data of the ``dpo`` optimizer.

Pairs come from ``drirl.pairs.build_pairs``: a harmful prompt prefers its safe
demonstration over the policy's own greedy sample, and a benign look-alike prefers its
helpful demonstration over a refusal line of the same category. Each pair becomes a row
of TRL's conversational preference format. ``prompt`` is the user turn, and ``chosen``
and ``rejected`` are one assistant turn each. So TRL renders the prompt with the chat
template's generation prompt, and each response ends with one end-of-turn token.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from drirl.components import OptimizerSettings
from drirl.errors import DrirlError
from drirl.generation import chat_messages
from drirl.pairs import PreferencePair
from drirl.plugins.optimizers.sft_dpo_common import (
    check_common_settings,
    fits_budget,
    is_number,
    require,
    warn_left_out,
)

logger = logging.getLogger(__name__)

SCALER_GROUPS = ("batch", "pair")


@dataclass(frozen=True)
class DPOSettings(OptimizerSettings):
    """Settings of the ``dpo`` optimizer.

    ``beta`` is DPO's inverse temperature: the loss of a pair is
    ``-log sigmoid(beta * (logratio_chosen - logratio_rejected))``. Its default 0.1 is
    DPOConfig's (trl 1.16). ``batch_size`` counts preference pairs per step.
    ``max_completion_length`` bounds the policy samples that serve as rejected responses,
    and pairs longer than ``max_prompt_length + max_completion_length`` tokens are left
    out. ``scaler_groups`` sets which pairs a difficulty scaler compares: ``batch`` puts
    all pairs of a step in one group, and ``pair`` makes every pair its own group (see
    ``ScaledDPOTrainer``). ``trl_args`` passes further DPOConfig fields through unchanged.
    """

    beta: float = 0.1
    logging_steps: int = 1
    scaler_groups: str = "batch"
    trl_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_common_settings(self)
        require(
            is_number(self.beta) and self.beta > 0, "beta", self.beta, "a number > 0"
        )
        require(
            self.scaler_groups in SCALER_GROUPS,
            "scaler_groups",
            self.scaler_groups,
            ", ".join(SCALER_GROUPS),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)


def assistant_turn(text: str) -> list[dict[str, str]]:
    """Return ``text`` as a conversation of one assistant message."""
    return [{"role": "assistant", "content": text}]


def build_preference_dataset(
    pairs: Sequence[PreferencePair],
    tokenizer: PreTrainedTokenizerBase,
    settings: DPOSettings,
) -> Dataset:
    """Build TRL's conversational preference dataset from the pairs.

    The extra columns ``prompt_text`` and ``category`` stay in the tokenized dataset, where
    ``ScaledDPOTrainer`` looks them up to describe a batch to the difficulty scaler.
    """
    rows: dict[str, list[Any]] = {
        "prompt": [],
        "chosen": [],
        "rejected": [],
        "prompt_text": [],
        "category": [],
        "source": [],
    }
    too_long: list[str] = []
    for pair in pairs:
        if not fits_budget(
            tokenizer,
            pair.prompt,
            [pair.chosen, pair.rejected],
            settings.max_prompt_length,
            settings.max_completion_length,
        ):
            too_long.append(pair.record_id)
            continue
        rows["prompt"].append(chat_messages(pair.prompt))
        rows["chosen"].append(assistant_turn(pair.chosen))
        rows["rejected"].append(assistant_turn(pair.rejected))
        rows["prompt_text"].append(pair.prompt)
        rows["category"].append(pair.category or "")
        rows["source"].append(pair.source)
    warn_left_out(too_long, settings, "preference pairs")
    if not rows["prompt"]:
        raise DrirlError(
            f"none of the {len(pairs)} preference pairs fits max_prompt_length + "
            "max_completion_length tokens; raise these settings"
        )
    return Dataset.from_dict(rows)
