"""The life cycle of the ``dpo`` optimizer: sample, build pairs, set up, train, save."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PrinterCallback
from trl import DPOConfig, DPOTrainer

from drirl.atomic import write_json_atomic, write_text_atomic
from drirl.checkpoints import trainer_save_values
from drirl.components import DifficultyScaler, Record, RunContext, TrainResult
from drirl.distributed import is_main_process, main_process_first
from drirl.errors import DrirlError
from drirl.generation import load_tokenizer
from drirl.pairs import (
    PreferencePair,
    build_pairs,
    load_or_generate_samples,
    pairs_to_rows,
)
from drirl.plugins.optimizers.dpo_data import DPOSettings, build_preference_dataset
from drirl.plugins.optimizers.dpo_trainer import ScaledDPOTrainer
from drirl.plugins.optimizers.sft_dpo_common import (
    base_config_values,
    check_trl_args,
    train_split,
)
from drirl.policy_save import save_trained_policy

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
LOG_HISTORY_FILE = "log_history.json"
SAMPLES_FILE = "policy_samples.jsonl"
PAIRS_FILE = "pairs.jsonl"
# Fields that drirl sets itself; trl_args may not override them.
MANAGED_FIELDS = (
    "output_dir",
    "max_steps",
    "per_device_train_batch_size",
    "beta",
    "learning_rate",
    "logging_steps",
    "max_length",
    "seed",
    "disable_tqdm",
)


def build_dpo_config(
    settings: DPOSettings, out_dir: Path, ctx: RunContext
) -> DPOConfig:
    """Build the DPOConfig: fp32, no trackers, checkpoints only if ``ctx`` sets them."""
    check_trl_args(settings.trl_args, DPOConfig, MANAGED_FIELDS)
    values: dict[str, Any] = {
        **base_config_values(ctx),
        **settings.trl_args,
        **trainer_save_values(ctx.checkpoint_every),
        "output_dir": str(out_dir / "trainer"),
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "beta": settings.beta,
        "learning_rate": settings.learning_rate,
        "logging_steps": settings.logging_steps,
        "max_length": settings.max_prompt_length + settings.max_completion_length,
        "seed": ctx.seed,
        "disable_tqdm": not ctx.show_progress,
    }
    return DPOConfig(**values)


def preference_pairs(
    settings: DPOSettings,
    policy_path: Path,
    records: Sequence[Record],
    out_dir: Path,
    ctx: RunContext,
) -> list[PreferencePair]:
    """Sample the policy once per harmful train prompt and build the preference pairs.

    The greedy samples are cached in ``out_dir``, and the pairs are saved there as JSONL.
    With several processes the main process samples, and the others read its cache.
    """
    train = train_split(records, "dpo")
    with main_process_first():
        samples = load_or_generate_samples(
            policy_path,
            train,
            out_dir / SAMPLES_FILE,
            max_new_tokens=settings.max_completion_length,
            ctx=ctx,
        )
    pairs = build_pairs(train, samples)
    if not pairs:
        raise DrirlError("the train records produced no preference pairs")
    text = "".join(
        json.dumps(row, ensure_ascii=False) + "\n" for row in pairs_to_rows(pairs)
    )
    if is_main_process():
        write_text_atomic(out_dir / PAIRS_FILE, text)
    return pairs


def build_dpo_trainer(
    settings: DPOSettings,
    policy_path: Path,
    pairs: Sequence[PreferencePair],
    scaler: DifficultyScaler | None,
    out_dir: Path,
    ctx: RunContext,
) -> DPOTrainer:
    """Load the policy and tokenizer and return a DPOTrainer, or a ScaledDPOTrainer with a scaler."""
    tokenizer = load_tokenizer(
        policy_path, padding_side="right", trust_remote_code=ctx.trust_remote_code
    )
    dataset = build_preference_dataset(pairs, tokenizer, settings)
    model = AutoModelForCausalLM.from_pretrained(
        policy_path, dtype=torch.float32, trust_remote_code=ctx.trust_remote_code
    )
    kwargs: dict[str, Any] = {
        "model": model,
        "args": build_dpo_config(settings, out_dir, ctx),
        "train_dataset": dataset,
        "processing_class": tokenizer,
    }
    if scaler is None:
        trainer = DPOTrainer(**kwargs)
    else:
        trainer = ScaledDPOTrainer(
            **kwargs, scaler=scaler, scaler_groups=settings.scaler_groups
        )
    if not ctx.show_progress:
        # With tqdm disabled, transformers prints every log dict to stdout instead.
        trainer.remove_callback(PrinterCallback)
    return trainer


def run_dpo(
    settings: DPOSettings,
    policy_path: Path,
    records: Sequence[Record],
    scaler: DifficultyScaler | None,
    out_dir: Path,
    ctx: RunContext,
) -> TrainResult:
    """Train with TRL's DPO, or with DPO-S when ``scaler`` is given, and save the model.

    Writes ``out_dir/model`` (safetensors weights and the tokenizer), the pairs, the
    policy samples and ``out_dir/log_history.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(ctx.seed)
    pairs = preference_pairs(settings, Path(policy_path), records, out_dir, ctx)
    trainer = build_dpo_trainer(settings, policy_path, pairs, scaler, out_dir, ctx)
    logger.info(
        "training %s for %d steps on %d preference pairs (%d per step)",
        type(trainer).__name__,
        settings.steps,
        len(trainer.train_dataset),
        settings.batch_size,
    )
    trainer.train()
    model_path = out_dir / MODEL_DIR
    save_trained_policy(
        trainer,
        trainer.processing_class,
        out_dir=out_dir,
        model_path=model_path,
        policy_path=Path(policy_path),
        steps=settings.steps,
        lora=False,
    )
    log_history = list(trainer.state.log_history)
    if is_main_process():
        write_json_atomic(out_dir / LOG_HISTORY_FILE, log_history)
    logger.info("saved the trained model to %s", model_path)
    return TrainResult(model_path=model_path, log_history=log_history)
