"""The ``ppo`` optimizer: PPO with a value head, on accelerate, and PPO-S with a scaler."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drirl import hookimpl
from drirl.components import (
    DifficultyScaler,
    Optimizer,
    Record,
    RewardScorer,
    RunContext,
    TrainResult,
)
from drirl.hookspecs import Register
from drirl.plugins.optimizers.ppo_data import PPOSettings
from drirl.plugins.optimizers.ppo_run import run_ppo
from drirl.scaling import is_identity_scaler


class PPO(Optimizer):
    """Proximal policy optimisation against a reward scorer, with a KL penalty.

    TRL 1.16 ships no PPO trainer, so drirl runs its own loop on accelerate. It samples
    rollouts from the policy and learns a linear value head on the policy's last hidden
    state. Rewards carry a per-token KL penalty against the frozen starting policy. The
    loop computes GAE, whitens the advantages and minimises the clipped policy and value
    losses. With a scaler other than ``none`` this is PPO-S, which multiplies the whitened
    advantages of each completion by its alpha.
    """

    name = "ppo"
    Settings = PPOSettings
    accepts_scaler = True

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
        if is_identity_scaler(scaler):
            scaler = None
        return run_ppo(
            self.settings, policy_path, records, scorer, scaler, out_dir, ctx
        )


@hookimpl
def register_optimizers(register: Register) -> None:
    """Register the ``ppo`` optimizer."""
    register(PPO)
