"""Policies saved during the optimize stage, to evaluate each like the final policy.

With ``evaluation.checkpoint_every: N`` an optimizer saves the policy after every N-th
step, except the last one, whose policy is the stage's ``model`` folder. A saved policy
lives in ``<optimize stage>/checkpoints/step-<step>`` with its weights (safetensors) and
tokenizer, so the evaluate stage loads it as it loads a final policy.

Optimizers built on a transformers Trainer (``grpo``, ``grpo_s``, ``dpo``, ``sft``) let
the Trainer save with ``save_only_model``, and ``collect_trainer_checkpoints`` then
moves its ``checkpoint-<step>`` folders here. ``ppo`` saves to ``checkpoint_path`` in
its loop.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"
STEP_PREFIX = "step-"
# transformers names the folders of Trainer checkpoints checkpoint-<global step>.
_TRAINER_FOLDER = re.compile(r"checkpoint-(\d+)")
# Files a Trainer writes beside the weights that the evaluate stage does not read.
_TRAINER_FILES = ("trainer_state.json", "training_args.bin")


def wants_checkpoint(step: int, every: int | None, last_step: int) -> bool:
    """Return whether the policy after ``step`` is saved as a checkpoint."""
    return every is not None and step % every == 0 and step < last_step


def checkpoint_path(out_dir: Path, step: int) -> Path:
    """Return the folder of the policy saved after ``step`` in an optimize stage."""
    return Path(out_dir) / CHECKPOINTS_DIR / f"{STEP_PREFIX}{step}"


def trainer_save_values(every: int | None) -> dict[str, Any]:
    """Return Trainer config values that save the weights alone every ``every`` steps.

    Empty when ``every`` is None, so the config keeps ``save_strategy: "no"``.
    """
    if every is None:
        return {}
    return {"save_strategy": "steps", "save_steps": every, "save_only_model": True}


def collect_trainer_checkpoints(
    trainer_dir: Path, out_dir: Path, last_step: int
) -> list[Path]:
    """Move a Trainer's ``checkpoint-<step>`` folders to ``out_dir/checkpoints``.

    The folder of ``last_step`` is removed: the stage saves that policy as its model.
    Returns the moved folders in step order.
    """
    trainer_dir = Path(trainer_dir)
    if not trainer_dir.is_dir():
        return []
    found = []
    for folder in trainer_dir.iterdir():
        match = _TRAINER_FOLDER.fullmatch(folder.name)
        if match and folder.is_dir():
            found.append((int(match.group(1)), folder))
    moved = []
    for step, folder in sorted(found):
        if step >= last_step:
            shutil.rmtree(folder)
            continue
        for name in _TRAINER_FILES:
            (folder / name).unlink(missing_ok=True)
        target = checkpoint_path(out_dir, step)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(target)
        moved.append(target)
    return moved


def list_checkpoints(optimize_dir: Path) -> list[tuple[int, Path]]:
    """Return the (step, folder) pairs saved in an optimize stage, in step order."""
    root = Path(optimize_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        name = folder.name
        if folder.is_dir() and name.startswith(STEP_PREFIX):
            step = name[len(STEP_PREFIX) :]
            if step.isdigit():
                found.append((int(step), folder))
    return sorted(found)
