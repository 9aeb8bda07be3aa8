"""The ``dpo`` optimizer: TRL's DPO on demonstration pairs, and DPO-S with a difficulty scaler."""

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
from drirl.plugins.optimizers.dpo_data import DPOSettings
from drirl.plugins.optimizers.dpo_run import run_dpo
from drirl.scaling import is_identity_scaler


class DPO(Optimizer):
    """Direct preference optimisation, as TRL implements it, with an optional scaled beta.

    With scaler ``none`` this is plain DPO. With any other scaler each pair's beta is
    multiplied by the scaler's alpha for that pair (DPO-S, see ``ScaledDPOTrainer``).
    No reward model is trained: DPO reads its preferences from the pairs.
    """

    name = "dpo"
    Settings = DPOSettings
    needs_reward = False

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
        return run_dpo(self.settings, policy_path, records, scaler, out_dir, ctx)


@hookimpl
def register_optimizers(register: Register) -> None:
    """Register the ``dpo`` optimizer."""
    register(DPO)
