"""The life cycle shared by ``grpo`` and ``grpo_s``: set up, train, save."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from drirl.atomic import write_json_atomic
from drirl.checkpoints import trainer_save_values
from drirl.components import (
    DifficultyScaler,
    Record,
    RewardScorer,
    RunContext,
    TrainResult,
)
from drirl.distributed import is_main_process
from drirl.errors import ConfigError, DrirlError
from drirl.generation import load_tokenizer
from drirl.lora import lora_config, lora_values
from drirl.plugins.optimizers.grpo_data import (
    GRPOSettings,
    build_train_dataset,
    make_reward_function,
)
from drirl.plugins.optimizers.grpo_monitors import MONITOR_NAMES, refusal_monitors
from drirl.plugins.optimizers.grpo_trainer import ScaledGRPOTrainer
from drirl.policy_save import save_trained_policy

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
LOG_HISTORY_FILE = "log_history.json"
TRAINER_DIR = "trainer"
# Fields that drirl sets itself; trl_args may not override them.
MANAGED_FIELDS = (
    "output_dir",
    "max_steps",
    "per_device_train_batch_size",
    "num_generations",
    "beta",
    "learning_rate",
    "max_completion_length",
    "temperature",
    "logging_steps",
    "seed",
    "disable_tqdm",
    "reward_weights",
)


def build_config(settings: GRPOSettings, out_dir: Path, ctx: RunContext) -> GRPOConfig:
    """Build the GRPOConfig: fp32, no trackers, steps and seed from drirl.

    The Trainer saves no checkpoints unless ``ctx.checkpoint_every`` is set.
    """
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    unknown = sorted(set(settings.trl_args) - known)
    if unknown:
        raise ConfigError(
            f"unknown GRPOConfig field(s) {', '.join(unknown)} in trl_args; see "
            "trl.GRPOConfig (trl 1.16) for the accepted fields",
            field="training.trl_args",
        )
    managed = sorted(set(settings.trl_args) & set(MANAGED_FIELDS))
    if managed:
        raise ConfigError(
            f"trl_args may not set {', '.join(managed)}; set them as optimizer settings",
            field="training.trl_args",
        )
    on_cpu = ctx.device == "cpu"
    values: dict[str, Any] = {
        "use_cpu": on_cpu,
        "bf16": False,
        "fp16": False,
        # transformers 5.25 renamed gradient_checkpointing; setting both avoids its warning.
        "activation_checkpointing": False,
        "gradient_checkpointing": False,
        "report_to": [],
        "save_strategy": "no",
        "log_completions": False,
        **settings.trl_args,
        **trainer_save_values(ctx.checkpoint_every),
        "output_dir": str(out_dir / TRAINER_DIR),
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "num_generations": settings.num_generations,
        "beta": settings.beta,
        "learning_rate": settings.learning_rate,
        "max_completion_length": settings.max_completion_length,
        "temperature": settings.temperature,
        "logging_steps": settings.logging_steps,
        "seed": ctx.seed,
        "disable_tqdm": not ctx.show_progress,
        "reward_weights": [1.0] + [0.0] * len(MONITOR_NAMES),
    }
    return GRPOConfig(**values)


def run_grpo(
    settings: GRPOSettings,
    policy_path: Path,
    records: Sequence[Record],
    scorer: RewardScorer | None,
    scaler: DifficultyScaler | None,
    out_dir: Path,
    ctx: RunContext,
) -> TrainResult:
    """Train with TRL's GRPO, or with GRPO-S when ``scaler`` is given, and save the model.

    Writes ``out_dir/model`` (safetensors weights and the tokenizer) and
    ``out_dir/log_history.json``.
    """
    if scorer is None:
        raise DrirlError(
            "GRPO needs a reward scorer; run the reward stage first or pick a reward learner"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(ctx.seed)

    tokenizer = load_tokenizer(
        policy_path, padding_side="left", trust_remote_code=ctx.trust_remote_code
    )
    dataset = build_train_dataset(
        records,
        tokenizer,
        settings.max_prompt_length,
        ctx.seed,
        balance_kinds=settings.balance_kinds,
        harmful_share=settings.harmful_share,
    )
    model = AutoModelForCausalLM.from_pretrained(
        policy_path, dtype=torch.float32, trust_remote_code=ctx.trust_remote_code
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    config = build_config(settings, out_dir, ctx)
    kwargs: dict[str, Any] = {
        "model": model,
        # The monitors only log refusal curves; their weight 0 leaves rewards unchanged.
        "reward_funcs": [
            make_reward_function(scorer, settings.nonfinite_rewards),
            *refusal_monitors(),
        ],
        "args": config,
        "train_dataset": dataset,
        "processing_class": tokenizer,
    }
    lora = lora_values(settings.lora)
    if lora is not None:
        kwargs["peft_config"] = lora_config(lora)
    if scaler is None:
        trainer = GRPOTrainer(**kwargs)
    else:
        trainer = ScaledGRPOTrainer(**kwargs, scaler=scaler, scorer=scorer)
    if not ctx.show_progress:
        # With tqdm disabled, transformers prints every log dict to stdout instead.
        trainer.remove_callback(PrinterCallback)

    logger.info(
        "training %s for %d steps on %d prompts (%d completions per step)",
        type(trainer).__name__,
        settings.steps,
        len(dataset),
        settings.batch_size,
    )
    trainer.train()
    model_path = out_dir / MODEL_DIR
    save_trained_policy(
        trainer,
        tokenizer,
        out_dir=out_dir,
        model_path=model_path,
        policy_path=policy_path,
        steps=settings.steps,
        lora=lora is not None,
        trust_remote_code=ctx.trust_remote_code,
    )
    log_history = list(trainer.state.log_history)
    if is_main_process():
        write_json_atomic(out_dir / LOG_HISTORY_FILE, log_history)
    logger.info("saved the trained model to %s", model_path)
    return TrainResult(model_path=model_path, log_history=log_history)
