"""The last step of the training optimizers: the trained policy as a plain model folder.

The ``sft``, ``dpo``, ``grpo`` and ``grpo_s`` stages end the same way. The trainer's
step checkpoints are moved to ``<stage>/checkpoints/step-<n>``, and adapters saved in them
are merged into the starting weights. The final policy is written to a temporary folder
that is then renamed, so an interrupted save leaves no half-written model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer

from drirl.checkpoints import collect_trainer_checkpoints
from drirl.distributed import is_main_process, shared_atomic_folder
from drirl.lora import merge_saved_adapters, save_merged_atomic


def save_model_atomic(trainer: Trainer, tokenizer: Any, model_path: Path) -> None:
    """Save weights (safetensors) and tokenizer to a temporary folder, then rename it.

    Every process calls ``save_model``, which writes on the main process only and gathers
    sharded weights under DeepSpeed ZeRO-3 or FSDP.
    """
    with shared_atomic_folder(model_path) as tmp:
        trainer.save_model(str(tmp))
        if is_main_process():
            tokenizer.save_pretrained(str(tmp))


def save_trained_policy(
    trainer: Trainer,
    tokenizer: Any,
    *,
    out_dir: Path,
    model_path: Path,
    policy_path: Path,
    steps: int,
    lora: bool,
    trust_remote_code: bool = False,
) -> None:
    """Move the trainer's step checkpoints to ``out_dir`` and save the final policy.

    The checkpoints are read from the trainer's ``output_dir``. With ``lora`` the adapters
    of each checkpoint and of the final policy are merged into the weights of
    ``policy_path``, the policy the stage started from.
    """
    if is_main_process():
        saved = collect_trainer_checkpoints(
            Path(trainer.args.output_dir), out_dir, steps
        )
        if lora:
            merge_saved_adapters(
                saved, policy_path, trust_remote_code=trust_remote_code
            )
    if lora:
        save_merged_atomic(trainer, tokenizer, model_path)
    else:
        save_model_atomic(trainer, tokenizer, model_path)
