"""The value head of PPO and the policy module that carries it.

The value head is one linear layer on the policy's last hidden state (after the final
norm), so the policy and the value function share the transformer. Its weights start at
zero, so the first rollout's values are 0 and its advantages come from the rewards alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn
from transformers import PreTrainedModel

from drirl.atomic import write_bytes_atomic
from drirl.plugins.optimizers.ppo_math import token_logprobs


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Return position ids that skip left padding, as ``generate`` computes them."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def completion_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    output_hidden_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the model on prompt + completion and keep the positions that predict the completion.

    Returns the logits (B, L, V) whose row t predicts completion token t, and, when
    requested, the last hidden states (B, L, H) at the same positions.
    """
    outputs = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        output_hidden_states=output_hidden_states,
    )
    # Position P + t - 1 (the token before completion token t) predicts token t.
    keep = slice(-completion_length - 1, -1)
    logits = outputs.logits[:, keep]
    hidden = outputs.hidden_states[-1][:, keep] if output_hidden_states else None
    return logits, hidden


class ValueHead(nn.Module):
    """A linear map from a hidden state to a scalar value."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Return one value per position, shape (B, L)."""
        return self.linear(hidden_states.float()).squeeze(-1)

    def save(self, path: Path) -> None:
        """Write the head's weights to ``path`` as safetensors, atomically."""
        tensors = {
            k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
        }
        write_bytes_atomic(path, save(tensors))

    def load(self, path: Path) -> None:
        """Read weights that ``save`` wrote."""
        self.load_state_dict(load_file(str(path)))


class PolicyWithValueHead(nn.Module):
    """A causal LM policy and its value head, trained together as one module.

    ``forward`` returns what the PPO loss needs, so that a wrapper such as accelerate's
    DistributedDataParallel wraps the whole computation.
    """

    def __init__(self, policy: PreTrainedModel) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = ValueHead(policy.config.get_text_config().hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the log-probabilities and values of the completion tokens, both (B, L).

        ``input_ids`` is the prompt followed by ``completion_ids``. The value at t is the
        value of the state before completion token t is emitted.
        """
        logits, hidden = completion_logits(
            self.policy,
            input_ids,
            attention_mask,
            completion_ids.shape[1],
            output_hidden_states=True,
        )
        assert hidden is not None
        logprobs = token_logprobs(logits, completion_ids, temperature)
        return logprobs, self.value_head(hidden)


@torch.no_grad()
def reference_logprobs(
    reference: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Return the reference model's log-probabilities of the completion tokens (B, L)."""
    logits, _ = completion_logits(
        reference, input_ids, attention_mask, completion_ids.shape[1]
    )
    return token_logprobs(logits, completion_ids, temperature)
