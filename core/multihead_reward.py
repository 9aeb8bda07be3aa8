"""Multihead reward models: one transformer backbone with one scalar head per harm category.

All categories share one forward pass of the backbone. The heads are the rows of one linear
layer (hidden size -> number of categories, no bias), read at the last real token as in
``drirl.reward_model``, and each row of a batch takes its own category's head. A response
scored under several categories therefore costs one backbone pass, not one per category.

A saved multihead folder contains:

- ``backbone/``: the transformer body (``save_pretrained``, safetensors) and its tokenizer;
- ``heads.safetensors``: the tensor ``weight`` of shape (categories, hidden size), with the
  category of each row in the file's ``categories`` metadata (a JSON list).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from drirl.atomic import atomic_folder
from drirl.errors import DrirlError
from drirl.reward_model import (
    MULTIHEAD_KEY,
    distinct_pad_token,
    encode_sequence,
    head_rewards,
    pad_batch,
    pooled_hidden,
    route_missing,
)

logger = logging.getLogger(__name__)

BACKBONE_DIR = "backbone"
HEADS_FILE = "heads.safetensors"


class MultiHeadRewardModel(torch.nn.Module):
    """A backbone and a scalar reward head per category; ``forward`` returns shape (B,)."""

    def __init__(
        self,
        backbone: torch.nn.Module,
        categories: Sequence[str],
        heads: torch.nn.Linear | None = None,
    ) -> None:
        super().__init__()
        if not categories or len(set(categories)) != len(categories):
            raise DrirlError(
                f"a multihead reward model needs distinct category names, got {list(categories)!r}"
            )
        hidden_size = backbone.config.hidden_size
        if heads is None:
            heads = torch.nn.Linear(hidden_size, len(categories), bias=False)
        if tuple(heads.weight.shape) != (len(categories), hidden_size):
            raise DrirlError(
                f"head weight has shape {tuple(heads.weight.shape)}, expected "
                f"({len(categories)}, {hidden_size}) for categories {list(categories)!r}"
            )
        self.backbone = backbone
        self.heads = heads
        self.categories = list(categories)
        self._index = {name: i for i, name in enumerate(self.categories)}

    @classmethod
    def from_policy(
        cls,
        policy_path: Path,
        categories: Sequence[str],
        seed: int = 0,
        *,
        trust_remote_code: bool = False,
    ) -> MultiHeadRewardModel:
        """Build an untrained model: the policy's transformer body and seeded random heads.

        The heads start from a normal distribution with the backbone's
        ``initializer_range`` as standard deviation, as transformers initialises the
        score head of a sequence-classification model.
        """
        backbone = AutoModel.from_pretrained(
            policy_path, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        model = cls(backbone, categories)
        std = float(getattr(backbone.config, "initializer_range", 0.02))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = torch.randn(model.heads.weight.shape, generator=generator) * std
            model.heads.weight.copy_(weight)
        return model

    def head_ids(self, categories: Sequence[str]) -> torch.Tensor:
        """Return the head index of each category name as a long tensor."""
        unknown = sorted({c for c in categories if c not in self._index})
        if unknown:
            raise DrirlError(
                f"no reward head for categories {', '.join(map(repr, unknown))}; "
                f"known categories: {', '.join(self.categories)}"
            )
        return torch.tensor([self._index[c] for c in categories], dtype=torch.long)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        head_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Return each row's reward under its own head, shape (B,)."""
        pooled = pooled_hidden(self.backbone, input_ids, attention_mask)
        return head_rewards(self.heads, pooled, head_ids)

    def all_heads(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Return every row's reward under every head, shape (B, categories)."""
        return self.heads(pooled_hidden(self.backbone, input_ids, attention_mask))

    def save(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the backbone, tokenizer and heads as safetensors; replace ``folder`` whole."""
        with atomic_folder(Path(folder)) as tmp:
            self.backbone.save_pretrained(tmp / BACKBONE_DIR, safe_serialization=True)
            tokenizer.save_pretrained(tmp / BACKBONE_DIR)
            save_file(
                {"weight": self.heads.weight.detach().cpu().contiguous()},
                str(tmp / HEADS_FILE),
                metadata={"categories": json.dumps(self.categories)},
            )

    @classmethod
    def load(
        cls, folder: Path, device: str = "cpu", *, trust_remote_code: bool = False
    ) -> tuple[MultiHeadRewardModel, PreTrainedTokenizerBase]:
        """Load a saved model and its tokenizer (fp32, eval mode) on ``device``."""
        folder = Path(folder)
        heads_path = folder / HEADS_FILE
        if not heads_path.is_file():
            raise DrirlError(
                f"{heads_path} not found, so {folder} is not a saved multihead reward "
                "model; train it with mode: multihead"
            )
        from safetensors import safe_open

        with safe_open(str(heads_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "categories" not in metadata:
            raise DrirlError(
                f"{heads_path} has no 'categories' metadata; save the model with "
                "MultiHeadRewardModel.save"
            )
        categories = json.loads(metadata["categories"])
        weight = load_file(str(heads_path))["weight"].float()
        backbone = AutoModel.from_pretrained(
            folder / BACKBONE_DIR,
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
        heads = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            heads.weight.copy_(weight)
        model = cls(backbone, categories, heads)
        model.to(device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(
            folder / BACKBONE_DIR, trust_remote_code=trust_remote_code
        )
        return model, tokenizer


def multihead_tokenizer(
    policy_path: Path, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load the policy's tokenizer with a pad token distinct from its end-of-turn token."""
    tokenizer = AutoTokenizer.from_pretrained(
        policy_path, trust_remote_code=trust_remote_code
    )
    tokenizer.pad_token = distinct_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    return tokenizer


class MultiHeadScorer:
    """Scores (prompt, response, category) rows with a multihead reward model.

    Rows that repeat a (prompt, response) pair under another category share one backbone
    pass, because every head reads the same pooled hidden state.
    """

    def __init__(
        self,
        model: MultiHeadRewardModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int,
        batch_size: int = 16,
        padding_side: str = "right",
        response_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.padding_side = padding_side
        # Responses are cut to this many tokens before scoring, as in training.
        self.response_tokens = response_tokens
        # The router file, when the learner saved one, routes rows given no category.
        self.router_path: Path | None = None
        self._router: Any = None
        model.eval()

    @property
    def categories(self) -> list[str]:
        """The harm categories this scorer accepts."""
        return sorted(self.model.categories)

    @torch.no_grad()
    def score_all(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> torch.Tensor:
        """Return every pair's reward under every head, float32 shape (N, categories).

        Column j belongs to ``self.model.categories[j]``.
        """
        if len(prompts) != len(responses):
            raise ValueError(
                f"prompts and responses differ in length: {len(prompts)}, {len(responses)}"
            )
        sequences = [
            encode_sequence(self.tokenizer, p, r, self.max_length, self.response_tokens)
            for p, r in zip(prompts, responses)
        ]
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        chunks = []
        for start in range(0, len(sequences), self.batch_size):
            input_ids, attention_mask = pad_batch(
                sequences[start : start + self.batch_size], pad_id, self.padding_side
            )
            rewards = self.model.all_heads(
                input_ids.to(device), attention_mask.to(device)
            )
            chunks.append(rewards.float().cpu())
        if not chunks:
            return torch.zeros((0, len(self.model.categories)), dtype=torch.float32)
        return torch.cat(chunks)

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        categories: Sequence[str | None],
    ) -> torch.Tensor:
        """Return one float32 reward per (prompt, response, category), shape (N,).

        A category of None or "" is replaced by the router's nearest category.
        """
        if not len(prompts) == len(responses) == len(categories):
            raise ValueError(
                f"prompts, responses and categories differ in length: {len(prompts)}, "
                f"{len(responses)}, {len(categories)}"
            )
        categories = route_missing(self, prompts, categories)
        head_ids = self.model.head_ids(categories)
        unique: dict[tuple[str, str], int] = {}
        rows = [
            unique.setdefault((p, r), len(unique)) for p, r in zip(prompts, responses)
        ]
        pairs = list(unique)
        table = self.score_all([p for p, _ in pairs], [r for _, r in pairs])
        rewards = (
            table[torch.tensor(rows, dtype=torch.long), head_ids]
            if rows
            else table[:0, 0]
        )
        if not torch.isfinite(rewards).all():
            raise DrirlError(
                "the multihead reward model returned NaN or infinite rewards; check that "
                "its weights loaded and were trained without diverging"
            )
        return rewards


def load_multihead_scorer(
    out_dir: Path,
    manifest: Mapping[str, Any],
    *,
    batch_size: int = 16,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> MultiHeadScorer:
    """Load the multihead model named in a reward folder's manifest as a scorer."""
    folder = Path(out_dir) / manifest["models"][MULTIHEAD_KEY]
    model, tokenizer = MultiHeadRewardModel.load(
        folder, device, trust_remote_code=trust_remote_code
    )
    missing = sorted(set(manifest.get("routes", {})) - set(model.categories))
    if missing:
        raise DrirlError(
            f"the manifest of {out_dir} lists categories {', '.join(missing)} that "
            f"{folder / HEADS_FILE} has no head for; retrain the reward models"
        )
    logger.info(
        "loaded a multihead reward model with %d heads from %s",
        len(model.categories),
        folder,
    )
    return MultiHeadScorer(
        model,
        tokenizer,
        max_length=manifest["max_length"],
        batch_size=batch_size,
        response_tokens=manifest.get("response_tokens"),
    )
