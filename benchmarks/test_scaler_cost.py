"""The cost of GRPO-S's difficulty scaling per batch, beside the advantage arithmetic.

One GRPO batch of the quickstart: 2 prompt groups x 4 completions of about 48 tokens.
The clip scaler encodes every completion's sentences with the embedded all-MiniLM-L6-v2
(demonstration embeddings are cached after the first call, as in training). Its cost splits
into the encoding (``test_clip_encoding``) and the sentence matching
(``test_clip_similarity``). The reward_gap scaler's demonstration rewards are cached per
scorer, so after the first batch it costs only the gap arithmetic (``test_reward_gap_factors``).
"""

from __future__ import annotations

import dataclasses

import torch

from drirl.components import RunContext, ScalerBatch
from drirl.plugins.scalers.clip import ClipScaler, matched_similarity, split_sentences
from drirl.plugins.scalers.reward_gap import RewardGapScaler
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


def test_clip_encoding(benchmark):
    scaler = ClipScaler(ctx=RunContext())
    sentences = [s for text in COMPLETIONS for s in split_sentences(text)]
    scaler.encoder.encode(sentences)
    embeddings = benchmark(scaler.encoder.encode, sentences)
    assert embeddings.shape[0] == len(sentences)


def test_clip_similarity(benchmark):
    scaler = ClipScaler(ctx=RunContext())
    groups = [split_sentences(text) for text in COMPLETIONS]
    completions = [scaler.encoder.encode(group) for group in groups]
    demonstration = scaler.encoder.encode(split_sentences(DEMONSTRATION))

    def match() -> list[float]:
        return [matched_similarity(rows, demonstration) for rows in completions]

    values = benchmark(match)
    assert len(values) == len(COMPLETIONS)


class LengthScorer:
    """Scores a response by its length; the demonstration's score is cached after one call."""

    def score(self, prompts, responses, categories) -> torch.Tensor:
        return torch.tensor([len(response) / 100 for response in responses])


def test_reward_gap_factors(benchmark):
    scaler = RewardGapScaler()
    batch = dataclasses.replace(quickstart_batch(), scorer=LengthScorer())
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
