"""PPO rollouts: sample completions from the policy, score them, keep what the loss needs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from drirl.components import Record, RewardScorer
from drirl.generation import chat_text
from drirl.kind_heads import score_with_kinds
from drirl.plugins.optimizers.grpo_data import NonFiniteRewardError
from drirl.plugins.optimizers.ppo_data import PPOSettings
from drirl.plugins.optimizers.ppo_math import completion_mask
from drirl.plugins.optimizers.ppo_value import PolicyWithValueHead, reference_logprobs


@dataclass
class Rollout:
    """One batch of sampled completions with the policy's and reference's view of them.

    Tensors are (B, L) over the completion tokens unless noted. ``input_ids`` and
    ``attention_mask`` (B, P + L) are the left-padded prompts followed by the completions.
    """

    records: list[Record]
    completions: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return len(self.records)


def stop_token_ids(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel
) -> set[int]:
    """Return the ids that end a completion: the tokenizer's eos and the model's eos ids."""
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(int(token) for token in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError(
            "the tokenizer and the model define no eos token, so completions cannot end; "
            "use a chat model with an eos token"
        )
    return ids


def score_completions(
    scorer: RewardScorer, records: Sequence[Record], completions: Sequence[str]
) -> torch.Tensor:
    """Return one finite float32 reward per completion; raise on a NaN or infinite one."""
    prompts = [record.prompt for record in records]
    categories = [record.category for record in records]
    kinds = [record.kind for record in records]
    scores = score_with_kinds(scorer, prompts, list(completions), categories, kinds)
    scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().reshape(-1)
    if scores.numel() != len(completions):
        raise ValueError(
            f"the reward scorer returned {scores.numel()} rewards for {len(completions)} "
            "completions; it must return one reward per (prompt, response) pair"
        )
    bad = [
        index for index, value in enumerate(scores.tolist()) if not math.isfinite(value)
    ]
    if bad:
        first = bad[0]
        raise NonFiniteRewardError(
            f"the reward scorer returned {scores[first].item()} for category "
            f"{categories[first]!r}, prompt {prompts[first][:80]!r} ({len(bad)} of "
            f"{len(scores)} rewards in this batch are not finite); check the reward model"
        )
    return scores


@torch.no_grad()
def sample_completions(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    settings: PPOSettings,
    stop_ids: set[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one completion per prompt with the chat template's generation prompt.

    Returns the left-padded prompt ids and mask (B, P) and the completion ids (B, L),
    which ``generate`` pads on the right with the pad token after each stop token.
    """
    texts = [chat_text(tokenizer, record.prompt) for record in records]
    encoded = tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=False
    ).to(policy.device)
    was_training = policy.training
    policy.eval()
    # top_k 0 and top_p 1 turn off truncated sampling, so tokens are drawn from
    # softmax(logits / temperature) exactly, the distribution the PPO ratio uses.
    output = policy.generate(
        **encoded,
        max_new_tokens=settings.max_completion_length,
        do_sample=True,
        temperature=settings.temperature,
        top_k=0,
        top_p=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(stop_ids),
    )
    policy.train(was_training)
    prompt_length = encoded["input_ids"].shape[1]
    return encoded["input_ids"], encoded["attention_mask"], output[:, prompt_length:]


@torch.no_grad()
def collect_rollout(
    model: PolicyWithValueHead,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    scorer: RewardScorer,
    settings: PPOSettings,
    stop_ids: set[int],
) -> Rollout:
    """Sample, decode and score completions, and compute their old log-probs and values."""
    prompt_ids, prompt_mask, completion_ids = sample_completions(
        model.policy, tokenizer, records, settings, stop_ids
    )
    mask = completion_mask(completion_ids, stop_ids)
    lengths = mask.sum(dim=1).long().tolist()
    completions = [
        tokenizer.decode(ids[:length], skip_special_tokens=True).strip()
        for ids, length in zip(completion_ids, lengths, strict=True)
    ]
    scores = score_completions(scorer, records, completions).to(completion_ids.device)

    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    logprobs, values = model(
        input_ids, attention_mask, completion_ids, settings.temperature
    )
    ref_logprobs = reference_logprobs(
        reference, input_ids, attention_mask, completion_ids, settings.temperature
    )
    return Rollout(
        records=list(records),
        completions=completions,
        input_ids=input_ids,
        attention_mask=attention_mask,
        completion_ids=completion_ids,
        mask=mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
    )
