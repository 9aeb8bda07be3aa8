"""LoRA adapters for the ``sft``, ``grpo`` and ``grpo_s`` optimizers.

With ``lora`` set in its settings, the optimizer trains low-rank adapters on the
policy's linear layers (peft's LoRA) and leaves the other weights frozen. With
``beta > 0`` TRL computes GRPO's reference log-probabilities with the adapters switched
off, so no second copy of the model is loaded. The stage saves each policy, final or
checkpoint, with the adapters merged into its weights, so evaluation and later stages
load a plain model.

Settings (each optional): ``r`` the adapter rank, ``alpha`` the scale numerator (the
update is multiplied by alpha / r), ``dropout`` on the adapter input, and
``target_modules``, a list of module names or ``all-linear`` (every linear layer but the
output head).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, PreTrainedModel, Trainer

from drirl.distributed import is_main_process, shared_atomic_folder

logger = logging.getLogger(__name__)

LORA_DEFAULTS: dict[str, Any] = {
    "r": 16,
    "alpha": 32,
    "dropout": 0.0,
    "target_modules": "all-linear",
}
ALL_LINEAR = "all-linear"
# Files peft writes with a saved adapter, which the merged folder does not keep.
_ADAPTER_FILES = ("adapter_", "README.md")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"lora.{key} is {value!r}; allowed: {allowed}")


def lora_values(lora: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return the LoRA settings with defaults filled in, or None when LoRA is off.

    Raises ValueError naming the key and the allowed values for an unknown key or a bad
    value.
    """
    if lora is None:
        return None
    if not isinstance(lora, Mapping):
        raise ValueError(
            f"lora is {lora!r}; allowed: null, or a mapping such as "
            "{r: 16, alpha: 32} (an empty mapping takes every default)"
        )
    unknown = sorted(set(lora) - set(LORA_DEFAULTS))
    if unknown:
        raise ValueError(
            f"lora has unknown key(s) {', '.join(map(str, unknown))}; allowed: "
            f"{', '.join(LORA_DEFAULTS)}"
        )
    values = {**LORA_DEFAULTS, **lora}
    rank = values["r"]
    if not (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1):
        raise _bad("r", rank, "an integer >= 1")
    if not (_is_number(values["alpha"]) and values["alpha"] > 0):
        raise _bad("alpha", values["alpha"], "a number > 0")
    if not (_is_number(values["dropout"]) and 0 <= values["dropout"] < 1):
        raise _bad("dropout", values["dropout"], "a number in [0, 1)")
    targets = values["target_modules"]
    names_ok = (
        isinstance(targets, list)
        and bool(targets)
        and all(isinstance(name, str) and name for name in targets)
    )
    if targets != ALL_LINEAR and not names_ok:
        raise _bad(
            "target_modules",
            targets,
            f"{ALL_LINEAR!r}, or a non-empty list of module names such as "
            "[q_proj, v_proj]",
        )
    return values


def lora_config(values: Mapping[str, Any]) -> LoraConfig:
    """Return peft's LoraConfig for a causal language model from checked settings."""
    targets = values["target_modules"]
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=values["r"],
        lora_alpha=values["alpha"],
        lora_dropout=values["dropout"],
        target_modules=targets if targets == ALL_LINEAR else list(targets),
        bias="none",
    )


def merged_model(model: Any) -> PreTrainedModel:
    """Return ``model`` with its LoRA adapters merged into the weights.

    A model without adapters comes back unchanged.
    """
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def save_merged_atomic(trainer: Trainer, tokenizer: Any, model_path: Path) -> None:
    """Save the trainer's policy with its adapters merged, as a plain model folder.

    Every process enters the shared temporary folder, and the main process writes it.

    NOTE: the merge reads the weights each process holds, so it does not gather
    weights sharded by DeepSpeed ZeRO-3 or FSDP.
    """
    model = merged_model(trainer.accelerator.unwrap_model(trainer.model))
    with shared_atomic_folder(model_path) as tmp:
        if is_main_process():
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))


def merge_saved_adapters(
    folders: list[Path], base_path: Path, *, trust_remote_code: bool = False
) -> None:
    """Merge each adapter saved during training into ``base_path``, in place."""
    for folder in folders:
        merge_saved_adapter(folder, base_path, trust_remote_code=trust_remote_code)


def merge_saved_adapter(
    folder: Path, base_path: Path, *, trust_remote_code: bool = False
) -> None:
    """Replace the adapter saved in ``folder`` with the merged model it gives.

    ``base_path`` is the policy the adapter was trained on. The tokenizer files in
    ``folder`` stay, and peft's model card (README.md) goes with the adapter. The
    merged weights are written beside ``folder`` first, so an error leaves the adapter
    in place.
    """
    folder = Path(folder)
    base = AutoModelForCausalLM.from_pretrained(
        base_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    merged = PeftModel.from_pretrained(base, folder).merge_and_unload()
    tmp = folder.with_name(folder.name + ".merging")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(tmp)
    for item in folder.iterdir():
        if item.is_file() and not item.name.startswith(_ADAPTER_FILES):
            if not (tmp / item.name).exists():
                shutil.copy2(item, tmp / item.name)
    shutil.rmtree(folder)
    tmp.rename(folder)
    logger.info("merged the LoRA adapter saved in %s into its base model", folder)
