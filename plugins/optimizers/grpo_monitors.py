"""Refusal monitors: how often the sampled completions refuse, logged at every GRPO step.

Each monitor is a TRL reward function with weight 0, so it changes neither the rewards nor
the advantages. TRL logs the mean of every reward function per logging step, which turns
the monitors into two training curves in ``log_history.json``:

- ``rewards/refusal_harmful/mean``: the fraction of completions to harmful prompts that the
  ``refusal_phrases`` judge labels a refusal;
- ``rewards/answer_benign/mean``: the fraction of completions to benign look-alikes that it
  labels an answer.

A monitor returns None for the other kind of prompt, which TRL leaves out of the mean.
The curves measure the policy's own samples on the training prompts, at the sampling
temperature; the evaluate stage measures the eval split with greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drirl.plugins.judges.refusal_phrases import RefusalPhrasesJudge
from drirl.plugins.optimizers.grpo_data import completion_text

HARMFUL_MONITOR = "refusal_harmful"
BENIGN_MONITOR = "answer_benign"
MONITOR_NAMES = (HARMFUL_MONITOR, BENIGN_MONITOR)
# The log keys TRL writes for the two monitors.
HARMFUL_REFUSAL_KEY = f"rewards/{HARMFUL_MONITOR}/mean"
BENIGN_ANSWER_KEY = f"rewards/{BENIGN_MONITOR}/mean"


def _monitor(name: str, monitored_kind: str, refusal_value: float) -> Callable[..., list]:
    judge = RefusalPhrasesJudge()

    def monitor(
        prompts: list[Any], completions: list[Any], kind: list[str], **_: Any
    ) -> list[float | None]:
        values: list[float | None] = []
        for completion, row_kind in zip(completions, kind):
            if row_kind != monitored_kind:
                values.append(None)
            elif judge.is_refusal(completion_text(completion)):
                values.append(refusal_value)
            else:
                values.append(1.0 - refusal_value)
        return values

    monitor.__name__ = name
    return monitor


def refusal_monitors() -> list[Callable[..., list]]:
    """Return the two monitors (harmful refusal, benign answer) as TRL reward functions."""
    return [
        _monitor(HARMFUL_MONITOR, "harmful", 1.0),
        _monitor(BENIGN_MONITOR, "benign", 0.0),
    ]
