"""The ``grpo_s`` optimizer: GRPO with normalised advantages scaled by difficulty factors."""

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
from drirl.plugins.optimizers.grpo_data import GRPOSettings
from drirl.plugins.optimizers.grpo_run import run_grpo
from drirl.plugins.scalers.none import NoScaler
from drirl.scaling import CombinedScaler


class GRPOS(Optimizer):
    """GRPO-S: each completion's group-normalised advantage is multiplied by alpha.

    alpha comes from the scaler given to ``train`` (for DR-IRL, ``clip*reward_gap``). With
    no scaler alpha is 1, which trains like ``grpo`` but still logs alpha statistics.
    """

    name = "grpo_s"
    Settings = GRPOSettings

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
        if scaler is None:
            scaler = CombinedScaler([NoScaler(None, ctx)], ctx=ctx)
        return run_grpo(
            self.settings, policy_path, records, scorer, scaler, out_dir, ctx
        )


@hookimpl
def register_optimizers(register: Register) -> None:
    """Register the ``grpo_s`` optimizer."""
    register(GRPOS)
