"""The ``grpo`` optimizer: TRL's GRPO against a reward scorer, with no difficulty scaling."""

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
from drirl.scaling import is_identity_scaler


class GRPO(Optimizer):
    """Group relative policy optimisation, as TRL implements it."""

    name = "grpo"
    Settings = GRPOSettings
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
                f"the grpo optimizer does not scale advantages, but scaler "
                f"{getattr(scaler, 'names', scaler.name)!r} was given; use optimizer "
                "grpo_s for difficulty scaling, or scaler 'none'"
            )
        return run_grpo(self.settings, policy_path, records, scorer, None, out_dir, ctx)


@hookimpl
def register_optimizers(register: Register) -> None:
    """Register the ``grpo`` optimizer."""
    register(GRPO)
