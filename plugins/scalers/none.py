"""The ``none`` difficulty scaler: alpha is 1 for every completion, which is plain GRPO."""

import torch

from drirl import hookimpl
from drirl.components import DifficultyScaler, ScalerBatch
from drirl.hookspecs import Register


class NoScaler(DifficultyScaler):
    """Leaves every advantage unchanged."""

    name = "none"

    def factors(self, batch: ScalerBatch) -> torch.Tensor:
        """Return a float32 tensor of ones, one per completion."""
        return torch.ones(len(batch.completions), dtype=torch.float32)


@hookimpl
def register_difficulty_scalers(register: Register) -> None:
    """Register the ``none`` scaler."""
    register(NoScaler)
