"""The ``sft`` optimizer: supervised fine-tuning on the demonstrations with TRL's SFTTrainer.

Every train record becomes one conversation: the prompt as the user turn and its
demonstration as the assistant turn. Harmful prompts teach the Chain-of-Draft refusal,
and benign look-alikes teach their helpful answer, so the model does not learn to refuse
everything. The loss covers only the assistant turn (TRL's completion-only loss for
prompt-completion data).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, PrinterCallback
from trl import SFTConfig, SFTTrainer

from drirl import hookimpl
from drirl.atomic import write_json_atomic
from drirl.checkpoints import trainer_save_values
from drirl.components import (
    DifficultyScaler,
    Optimizer,
    Record,
    RewardScorer,
    RunContext,
    TrainResult,
)
from drirl.dataset import balanced_by_kind
from drirl.distributed import is_main_process
from drirl.errors import DrirlError
from drirl.generation import chat_messages, load_tokenizer
from drirl.hookspecs import Register
from drirl.lora import lora_config, lora_values
from drirl.plugins.optimizers.sft_dpo_common import (
    base_config_values,
    check_common_settings,
    check_trl_args,
    fits_budget,
    train_split,
    warn_left_out,
)
from drirl.policy_save import save_trained_policy
from drirl.scaling import is_identity_scaler

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
LOG_HISTORY_FILE = "log_history.json"
# Fields that drirl sets itself; trl_args may not override them.
MANAGED_FIELDS = (
    "output_dir",
    "max_steps",
    "per_device_train_batch_size",
    "learning_rate",
    "logging_steps",
    "max_length",
    "seed",
    "disable_tqdm",
)


@dataclass(frozen=True)
class SFTSettings:
    """Settings of the ``sft`` optimizer.

    The fields it shares with the other optimizers (``learning_rate``, ``steps``,
    ``batch_size``, ``max_prompt_length``, ``max_completion_length``) mean the same and
    have the same defaults as ``OptimizerSettings``. It has no ``beta``, because
    supervised fine-tuning has no reference-model term, so a ``beta`` in the experiment
    file is rejected. ``batch_size`` counts conversations per step. Conversations longer
    than ``max_prompt_length + max_completion_length`` tokens are left out. With
    ``balance_kinds`` the conversations of the rarer kind (harmful or benign) are repeated
    until both kinds are equally many. The built-in data has two harmful prompts per benign
    one, so without it the model learns to refuse benign look-alikes too. ``trl_args``
    passes further SFTConfig fields through unchanged. ``lora`` trains LoRA adapters
    instead of every weight (``drirl.lora`` lists its keys and defaults). Null, the
    default, trains every weight.
    """

    learning_rate: float = 1e-5
    steps: int = 20
    batch_size: int = 8
    max_prompt_length: int = 256
    max_completion_length: int = 64
    logging_steps: int = 1
    balance_kinds: bool = True
    trl_args: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_common_settings(self)
        lora_values(self.lora)


def build_sft_dataset(
    records: Sequence[Record],
    tokenizer: PreTrainedTokenizerBase,
    settings: SFTSettings,
) -> Dataset:
    """Build TRL's conversational prompt-completion dataset from the train split.

    Records with an empty demonstration are left out, and so are conversations over the
    token budget (both with a warning).
    """
    usable: list[Record] = []
    empty: list[str] = []
    too_long: list[str] = []
    for record in train_split(records, "sft"):
        if not record.demonstration.strip():
            empty.append(record.id)
            continue
        if not fits_budget(
            tokenizer,
            record.prompt,
            [record.demonstration],
            settings.max_prompt_length,
            settings.max_completion_length,
        ):
            too_long.append(record.id)
            continue
        usable.append(record)
    if empty:
        logger.warning(
            "left out %d train records without a demonstration: %s",
            len(empty),
            ", ".join(empty[:10]),
        )
    warn_left_out(too_long, settings, "conversations")
    if not usable:
        raise DrirlError(
            "no train record has a demonstration that fits max_prompt_length + "
            "max_completion_length tokens; raise these settings or add demonstrations"
        )
    if settings.balance_kinds:
        usable = balanced_by_kind(usable)
    return Dataset.from_dict(
        {
            "prompt": [chat_messages(record.prompt) for record in usable],
            "completion": [
                [{"role": "assistant", "content": record.demonstration}]
                for record in usable
            ],
            "category": [record.category for record in usable],
        }
    )


def build_sft_config(
    settings: SFTSettings, out_dir: Path, ctx: RunContext
) -> SFTConfig:
    """Build the SFTConfig: fp32, no trackers, checkpoints only if ``ctx`` sets them."""
    check_trl_args(settings.trl_args, SFTConfig, MANAGED_FIELDS)
    values: dict[str, Any] = {
        **base_config_values(ctx),
        **settings.trl_args,
        **trainer_save_values(ctx.checkpoint_every),
        "output_dir": str(out_dir / "trainer"),
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "logging_steps": settings.logging_steps,
        "max_length": settings.max_prompt_length + settings.max_completion_length,
        "seed": ctx.seed,
        "disable_tqdm": not ctx.show_progress,
    }
    return SFTConfig(**values)


def build_sft_trainer(
    settings: SFTSettings,
    policy_path: Path,
    records: Sequence[Record],
    out_dir: Path,
    ctx: RunContext,
) -> SFTTrainer:
    """Load the policy and tokenizer and return a ready SFTTrainer."""
    tokenizer = load_tokenizer(
        policy_path, padding_side="right", trust_remote_code=ctx.trust_remote_code
    )
    dataset = build_sft_dataset(records, tokenizer, settings)
    model = AutoModelForCausalLM.from_pretrained(
        policy_path, dtype=torch.float32, trust_remote_code=ctx.trust_remote_code
    )
    lora = lora_values(settings.lora)
    trainer = SFTTrainer(
        model=model,
        args=build_sft_config(settings, out_dir, ctx),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(lora) if lora is not None else None,
    )
    if not ctx.show_progress:
        # With tqdm disabled, transformers prints every log dict to stdout instead.
        trainer.remove_callback(PrinterCallback)
    return trainer


class SFT(Optimizer):
    """Supervised fine-tuning on the safe demonstrations and the benign look-alikes' responses."""

    name = "sft"
    Settings = SFTSettings
    needs_reward = False
    accepts_scaler = False

    def train(
        self,
        policy_path: Path,
        records: Sequence[Record],
        scorer: RewardScorer | None,
        scaler: DifficultyScaler | None,
        out_dir: Path,
        ctx: RunContext,
    ) -> TrainResult:
        """Train on the train split; save the model under ``out_dir / "model"``."""
        if not is_identity_scaler(scaler):
            raise ValueError(
                f"the sft optimizer takes no difficulty scaler, but scaler "
                f"{getattr(scaler, 'names', scaler.name)!r} was given; use scaler 'none'"
            )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(ctx.seed)
        trainer = build_sft_trainer(self.settings, policy_path, records, out_dir, ctx)
        logger.info(
            "training SFT for %d steps on %d conversations (%d per step)",
            self.settings.steps,
            len(trainer.train_dataset),
            self.settings.batch_size,
        )
        trainer.train()
        model_path = out_dir / MODEL_DIR
        save_trained_policy(
            trainer,
            trainer.processing_class,
            out_dir=out_dir,
            model_path=model_path,
            policy_path=policy_path,
            steps=self.settings.steps,
            lora=self.settings.lora is not None,
            trust_remote_code=ctx.trust_remote_code,
        )
        log_history = list(trainer.state.log_history)
        if is_main_process():
            write_json_atomic(out_dir / LOG_HISTORY_FILE, log_history)
        logger.info("saved the fine-tuned model to %s", model_path)
        return TrainResult(model_path=model_path, log_history=log_history)


@hookimpl
def register_optimizers(register: Register) -> None:
    """Register the ``sft`` optimizer."""
    register(SFT)
