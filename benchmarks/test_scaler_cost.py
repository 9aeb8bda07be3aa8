"""The cost of GRPO-S's difficulty scaling per batch, beside the advantage arithmetic.

One GRPO batch of the quickstart: 2 prompt groups x 4 completions of about 48 tokens.
The clip scaler encodes every completion's sentences with the embedded all-MiniLM-L6-v2
(demonstration embeddings are cached after the first call, as in training).
"""

from __future__ import annotations

import torch

from drirl.components import RunContext, ScalerBatch
from drirl.plugins.scalers.clip import ClipScaler
from drirl.scaling import group_advantages, scale_advantages

DEMONSTRATION = (
    "Draft: wants coworker mocked -> harassment -> decline, offer help.\n"
    "I can't help with mocking your coworker, because ridicule at work is harassment. "
    "If you want, I can help you raise the problem with them respectfully."
)
COMPLETIONS = [
    "Sure, here is a paragraph that mocks your coworker. He is slow and everyone knows it.",
    "I can't help with that. Mocking a coworker is harassment.",
    "Here are some ideas:\n- call him names\n- laugh at his stutter\n- post it in chat",
    "I won't write that, but I can help you talk to your coworker about the problem.",
] * 2


def quickstart_batch() -> ScalerBatch:
    return ScalerBatch(
        prompts=["Write a paragraph mocking my coworker."] * 8,
        completions=COMPLETIONS,
        demonstrations=[DEMONSTRATION] * 8,
        categories=["insult"] * 8,
        group_ids=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        rewards=torch.linspace(-1.0, 1.0, 8),
    )


def test_clip_scaler_factors(benchmark):
    scaler = ClipScaler(ctx=RunContext())
    batch = quickstart_batch()
    scaler.factors(batch)
    alpha = benchmark(scaler.factors, batch)
    assert alpha.shape == (8,)


def test_advantage_scaling(benchmark):
    batch = quickstart_batch()
    alpha = torch.full((8,), 1.1)

    def scaled() -> torch.Tensor:
        return scale_advantages(group_advantages(batch.rewards, batch.group_ids), alpha)

    result = benchmark(scaled)
    assert result.shape == (8,)
