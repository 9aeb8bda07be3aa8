"""The life cycle of ``ppo``: set up, run rollout and update steps, save.

Assumptions: the policy fits on each device, because rollouts call ``generate`` on the
unwrapped model. That works unchanged under DistributedDataParallel.

NOTE: only single-process runs have been tested. The multi-process paths (gathered
statistics, whitening with reduced moments) have not run, and under DeepSpeed ZeRO-3 or
FSDP the unwrapped model contains sharded weights, so ``generate`` would need them gathered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from drirl.atomic import atomic_folder, write_json_atomic
from drirl.checkpoints import checkpoint_path, wants_checkpoint
from drirl.components import (
    DifficultyScaler,
    Record,
    RewardScorer,
    RunContext,
    TrainResult,
)
from drirl.errors import DrirlError
from drirl.generation import load_tokenizer
from drirl.plugins.optimizers.ppo_data import PPOSettings, prompt_batches, train_prompts
from drirl.plugins.optimizers.ppo_rollout import (
    Rollout,
    collect_rollout,
    stop_token_ids,
)
from drirl.plugins.optimizers.ppo_scaling import rollout_alpha
from drirl.plugins.optimizers.ppo_update import ppo_epochs, rollout_targets
from drirl.plugins.optimizers.ppo_value import PolicyWithValueHead
from drirl.scaling import alpha_statistics

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
VALUE_HEAD_FILE = "value_head.safetensors"
LOG_HISTORY_FILE = "log_history.json"


def _load_models(
    policy_path: Path, accelerator: Accelerator, *, trust_remote_code: bool = False
) -> tuple[PolicyWithValueHead, Any]:
    policy = AutoModelForCausalLM.from_pretrained(
        policy_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    reference = AutoModelForCausalLM.from_pretrained(
        policy_path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    reference.requires_grad_(False)
    reference.eval()
    return PolicyWithValueHead(policy), reference.to(accelerator.device)


def _rollout_statistics(
    accelerator: Accelerator, rollout: Rollout, kl: torch.Tensor, beta: float
) -> dict[str, float]:
    scores = accelerator.gather(rollout.scores.float())
    kl_sums = accelerator.gather(kl.sum(dim=1))
    lengths = accelerator.gather(rollout.mask.sum(dim=1))
    return {
        "reward": scores.mean().item(),
        "reward_std": scores.std().item() if scores.numel() > 1 else 0.0,
        "kl": kl_sums.mean().item(),
        "non_score_reward": -beta * kl_sums.mean().item(),
        "completion_length": lengths.float().mean().item(),
    }


def _mean_over_processes(
    accelerator: Accelerator, values: dict[str, float]
) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    local = torch.tensor([values[key] for key in keys], device=accelerator.device)
    reduced = accelerator.reduce(local, reduction="mean")
    return dict(zip(keys, reduced.tolist(), strict=True))


def _save_policy(
    accelerator: Accelerator, module: torch.nn.Module, tokenizer: Any, path: Path
) -> None:
    """Save the policy's weights and the tokenizer to ``path`` (main process only)."""
    if accelerator.is_main_process:
        unwrapped: PolicyWithValueHead = accelerator.unwrap_model(module)
        with atomic_folder(path) as tmp:
            unwrapped.policy.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))


def _save(
    accelerator: Accelerator,
    module: torch.nn.Module,
    tokenizer: Any,
    out_dir: Path,
    log_history: list[dict[str, Any]],
) -> Path:
    model_path = out_dir / MODEL_DIR
    accelerator.wait_for_everyone()
    _save_policy(accelerator, module, tokenizer, model_path)
    if accelerator.is_main_process:
        unwrapped: PolicyWithValueHead = accelerator.unwrap_model(module)
        unwrapped.value_head.save(out_dir / VALUE_HEAD_FILE)
        write_json_atomic(out_dir / LOG_HISTORY_FILE, log_history)
    accelerator.wait_for_everyone()
    return model_path


@dataclass
class PPOLoop:
    """The prepared models, optimizer and settings of one PPO run; ``step`` runs a step."""

    settings: PPOSettings
    accelerator: Accelerator
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    reference: Any
    tokenizer: Any
    scorer: RewardScorer
    scaler: DifficultyScaler | None
    stop_ids: set[int]
    generator: torch.Generator

    def step(self, step: int, records: list[Record]) -> dict[str, Any]:
        """Sample and score one rollout batch, update on it, and return the log entry."""
        settings = self.settings
        unwrapped: PolicyWithValueHead = self.accelerator.unwrap_model(self.module)
        rollout = collect_rollout(
            unwrapped,
            self.reference,
            self.tokenizer,
            records,
            self.scorer,
            settings,
            self.stop_ids,
        )
        entry: dict[str, Any] = {"step": step}
        alpha = None
        if self.scaler is not None:
            alpha, batch_alpha = rollout_alpha(
                self.accelerator, self.scaler, rollout, self.scorer
            )
            entry.update(alpha_statistics(batch_alpha))
            entry.update(self.scaler.statistics())
        advantages, returns, kl = rollout_targets(
            rollout, settings, alpha, self.accelerator
        )
        entry.update(
            _rollout_statistics(self.accelerator, rollout, kl, settings.kl_coef)
        )

        losses = ppo_epochs(
            self.accelerator,
            self.module,
            self.optimizer,
            rollout,
            advantages,
            returns,
            settings,
            self.generator,
        )
        entry.update(_mean_over_processes(self.accelerator, losses))
        entry["learning_rate"] = settings.learning_rate
        return entry


def _setup(
    settings: PPOSettings,
    policy_path: Path,
    scorer: RewardScorer,
    scaler: DifficultyScaler | None,
    ctx: RunContext,
) -> PPOLoop:
    accelerator = Accelerator(cpu=ctx.device == "cpu", mixed_precision="no")
    set_seed(ctx.seed, device_specific=True)
    tokenizer = load_tokenizer(
        policy_path, padding_side="left", trust_remote_code=ctx.trust_remote_code
    )
    model, reference = _load_models(
        policy_path, accelerator, trust_remote_code=ctx.trust_remote_code
    )
    stop_ids = stop_token_ids(tokenizer, model.policy)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=0.0
    )
    module, optimizer = accelerator.prepare(model, optimizer)
    return PPOLoop(
        settings=settings,
        accelerator=accelerator,
        module=module,
        optimizer=optimizer,
        reference=reference,
        tokenizer=tokenizer,
        scorer=scorer,
        scaler=scaler,
        stop_ids=stop_ids,
        generator=torch.Generator().manual_seed(ctx.seed),
    )


def run_ppo(
    settings: PPOSettings,
    policy_path: Path,
    records: Sequence[Record],
    scorer: RewardScorer | None,
    scaler: DifficultyScaler | None,
    out_dir: Path,
    ctx: RunContext,
) -> TrainResult:
    """Train with PPO, or with PPO-S when ``scaler`` is given, and save the policy.

    Writes ``out_dir/model`` (safetensors weights and the tokenizer), the value head
    to ``out_dir/value_head.safetensors`` and ``out_dir/log_history.json``.
    """
    if scorer is None:
        raise DrirlError(
            "PPO needs a reward scorer; run the reward stage first or pick a reward learner"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loop = _setup(settings, policy_path, scorer, scaler, ctx)
    accelerator = loop.accelerator
    prompts = train_prompts(records, loop.tokenizer, settings.max_prompt_length)
    batches = prompt_batches(
        prompts,
        settings.batch_size,
        ctx.seed,
        accelerator.process_index,
        accelerator.num_processes,
    )

    logger.info(
        "training PPO%s for %d steps on %d prompts (%d completions per step and process)",
        "-S" if scaler is not None else "",
        settings.steps,
        len(prompts),
        settings.batch_size,
    )
    log_history: list[dict[str, Any]] = []
    started = time.perf_counter()
    for step in tqdm(
        range(1, settings.steps + 1),
        desc="ppo",
        disable=not ctx.show_progress or not accelerator.is_main_process,
        unit="step",
    ):
        entry = loop.step(step, next(batches))
        log_history.append(entry)
        if wants_checkpoint(step, ctx.checkpoint_every, settings.steps):
            accelerator.wait_for_everyone()
            _save_policy(
                accelerator, loop.module, loop.tokenizer, checkpoint_path(out_dir, step)
            )
        logger.info(
            "ppo step %d/%d: reward %.4f, kl %.4f, policy loss %.4f, value loss %.4f, "
            "clip fraction %.3f",
            step,
            settings.steps,
            entry["reward"],
            entry["kl"],
            entry["policy_loss"],
            entry["value_loss"],
            entry["clip_fraction"],
        )
    log_history.append(
        {"step": settings.steps, "train_runtime": time.perf_counter() - started}
    )

    model_path = _save(accelerator, loop.module, loop.tokenizer, out_dir, log_history)
    accelerator.free_memory()
    logger.info("saved the trained model to %s", model_path)
    return TrainResult(model_path=model_path, log_history=log_history)
