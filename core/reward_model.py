"""Sequence-classification reward models: input format, scoring, and loading from disk.

A reward model reads one sequence, the chat-formatted prompt followed by the response and the
tokenizer's end-of-turn token, and returns one number read at the last real token. Training
(see the ``bradley_terry`` learner) and scoring both build sequences with ``encode_sequence``,
so the two see the same tokens.

The last real token is found from the attention mask, never by comparing token ids with the
pad token. Chat models often pad with their end-of-turn token (SmolLM2 pads with <|im_end|>,
id 2), which also closes every turn, so an id comparison would read the score one token early.

A saved reward-model folder contains ``manifest.json`` and one model folder per key of its
``models`` mapping: ``single``, one per harm category (``separate``), or ``multihead``, whose
folder holds one backbone and a head per category (see ``drirl.multihead_reward``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from drirl.atomic import write_json_atomic
from drirl.components import RewardScorer
from drirl.errors import DrirlError
from drirl.generation import chat_text

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SINGLE_KEY = "single"
MULTIHEAD_KEY = "multihead"
# Written by the learners beside the models; see drirl.routing.
ROUTER_FILE = "router.safetensors"
# Tokens tried, in order, as a pad token distinct from the end-of-turn token.
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "<unk>")


def format_sequence(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str
) -> str:
    """Return the text a reward model reads: chat prompt, response, end-of-turn token.

    The prompt part is the same text the policy is prompted with during generation.
    """
    return chat_text(tokenizer, prompt) + response + tokenizer.eos_token


def cut_response(
    tokenizer: PreTrainedTokenizerBase, response: str, tokens: int | None
) -> str:
    """Return the text of the first ``tokens`` tokens of ``response`` (all of it for None)."""
    if tokens is None:
        return response
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if len(ids) <= tokens:
        return response
    return tokenizer.decode(ids[:tokens])


def encode_sequence(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    response_tokens: int | None = None,
) -> list[int]:
    """Tokenize one (prompt, response) pair, cut to at most ``max_length`` tokens.

    With ``response_tokens`` the response is first cut to that many tokens, so a whole
    demonstration is read to the same length as a sample cut at that generation length.
    A sequence that is too long loses tokens before its final one, so it still ends with the
    end-of-turn token where the score is read.
    """
    response = cut_response(tokenizer, response, response_tokens)
    text = format_sequence(tokenizer, prompt, response)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_length:
        ids = ids[: max_length - 1] + ids[-1:]
    return ids


def distinct_pad_token(tokenizer: PreTrainedTokenizerBase) -> str:
    """Return a pad token that differs from the end-of-turn token.

    TRL's reward trainer and transformers' sequence-classification heads locate the last
    real token by comparing ids with the pad id, so training needs a pad token that never
    occurs inside a formatted sequence.
    """
    eos_id = tokenizer.eos_token_id
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != eos_id:
        return tokenizer.pad_token
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and vocab[candidate] not in (
            eos_id,
            tokenizer.bos_token_id,
        ):
            return candidate
    raise DrirlError(
        f"the tokenizer pads with its end-of-turn token {tokenizer.eos_token!r} and has none "
        f"of {', '.join(PAD_CANDIDATES)} to pad with instead; set a distinct pad token in "
        "the model's tokenizer_config.json"
    )


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Return the position of the last attended token of each row, for either padding side."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.to(positions.dtype)).argmax(dim=-1)


def pad_batch(
    sequences: Sequence[list[int]], pad_id: int, padding_side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one (input_ids, attention_mask) pair of tensors."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side is {padding_side!r}; allowed: right, left")
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        start = 0 if padding_side == "right" else width - len(ids)
        input_ids[row, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start : start + len(ids)] = 1
    return input_ids, attention_mask


def pooled_hidden(
    backbone: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Run ``backbone`` and return the hidden state of each row's last real token, (B, H).

    The backbone runs with explicit position ids, so left padding gives the same result as
    right padding.
    """
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    hidden = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    return hidden[rows, last_token_index(attention_mask)]


def head_rewards(
    heads: torch.nn.Linear, pooled: torch.Tensor, head_ids: torch.Tensor
) -> torch.Tensor:
    """Apply a linear layer of one output per head and keep each row's own head, shape (B,)."""
    return heads(pooled).gather(1, head_ids.view(-1, 1).to(pooled.device))[:, 0]


def backbone_of(model: PreTrainedModel) -> torch.nn.Module:
    """Return the transformer body of a sequence-classification model, without its head."""
    if not hasattr(model, "score"):
        raise DrirlError(
            f"{type(model).__name__} has no `score` head; drirl reward models are "
            "AutoModelForSequenceClassification models with num_labels=1"
        )
    return getattr(model, model.base_model_prefix)


@torch.no_grad()
def score_token_ids(
    model: PreTrainedModel,
    sequences: Sequence[list[int]],
    pad_id: int,
    *,
    batch_size: int = 16,
    padding_side: str = "right",
) -> torch.Tensor:
    """Score tokenized sequences with a sequence-classification model, float32 shape (N,).

    The score head is read at ``last_token_index`` (see ``pooled_hidden``).
    """
    backbone = backbone_of(model)
    device = next(model.parameters()).device
    model.eval()
    scores: list[torch.Tensor] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        input_ids, attention_mask = pad_batch(chunk, pad_id, padding_side)
        last = pooled_hidden(backbone, input_ids.to(device), attention_mask.to(device))
        scores.append(model.score(last)[:, 0].float().cpu())
    if not scores:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat(scores)


class RewardModelScorer:
    """Reward models routed by harm category, scoring (prompt, response) pairs.

    ``routes`` maps each known category to a key of ``models``; a single model serves every
    category it was trained on. Each model comes with its own tokenizer.
    """

    def __init__(
        self,
        models: Mapping[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]],
        routes: Mapping[str, str],
        *,
        max_length: int,
        batch_size: int = 16,
        padding_side: str = "right",
        response_tokens: int | None = None,
    ) -> None:
        unknown = sorted(set(routes.values()) - set(models))
        if unknown:
            raise DrirlError(
                f"categories route to missing reward models: {', '.join(unknown)}"
            )
        self.models = dict(models)
        self.routes = dict(routes)
        self.max_length = max_length
        self.batch_size = batch_size
        self.padding_side = padding_side
        # Responses are cut to this many tokens before scoring, as in training.
        self.response_tokens = response_tokens
        # The router file, when the learner saved one, routes rows given no category.
        self.router_path: Path | None = None
        self._router: Any = None
        for model, _ in self.models.values():
            model.eval()

    @property
    def categories(self) -> list[str]:
        """The harm categories this scorer accepts."""
        return sorted(self.routes)

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
        by_model: dict[str, list[int]] = {}
        for index, category in enumerate(categories):
            if category not in self.routes:
                raise DrirlError(
                    f"no reward model for category {category!r}; known categories: "
                    f"{', '.join(self.categories)}"
                )
            by_model.setdefault(self.routes[category], []).append(index)

        rewards = torch.zeros(len(prompts), dtype=torch.float32)
        for key, indices in by_model.items():
            model, tokenizer = self.models[key]
            sequences = [
                encode_sequence(
                    tokenizer,
                    prompts[i],
                    responses[i],
                    self.max_length,
                    self.response_tokens,
                )
                for i in indices
            ]
            rewards[indices] = score_token_ids(
                model,
                sequences,
                tokenizer.pad_token_id,
                batch_size=self.batch_size,
                padding_side=self.padding_side,
            )
            if not torch.isfinite(rewards[indices]).all():
                raise DrirlError(
                    f"reward model {key!r} returned NaN or infinite rewards; check that its "
                    "weights loaded and were trained without diverging"
                )
        return rewards


def route_missing(
    scorer: Any, prompts: Sequence[str], categories: Sequence[str | None]
) -> list[str]:
    """Return ``categories`` with empty entries routed by the scorer's router file."""
    if all(categories):
        return list(categories)
    from drirl.routing import CentroidRouter, fill_categories

    if scorer._router is None and scorer.router_path is not None:
        scorer._router = CentroidRouter.load(scorer.router_path)
    return fill_categories(prompts, categories, scorer._router)


def write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` atomically; its presence marks a finished reward-model folder."""
    write_json_atomic(Path(out_dir) / MANIFEST, dict(manifest))


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Read the manifest of a reward-model folder."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DrirlError(
            f"{path} not found, so {out_dir} contains no finished reward models; train them first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_model(
    model_dir: Path, device: str = "cpu", *, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load one saved reward model and its tokenizer (safetensors, fp32, eval mode)."""
    tokenizer = AutoTokenizer.from_pretrained(
        model_dir, trust_remote_code=trust_remote_code
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=1,
        dtype=torch.float32,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    model.to(device)
    model.eval()
    return model, tokenizer


def load_scorer(
    out_dir: Path,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> RewardScorer:
    """Load the reward models named in ``out_dir``'s manifest as one scorer on ``device``.

    A ``multihead`` folder loads as a ``MultiHeadScorer``, any other as a
    ``RewardModelScorer``. Both score with ``score(prompts, responses, categories)``.
    A folder trained with ``kind_heads`` wraps that scorer in a
    ``drirl.kind_heads.KindHeadScorer``, which also takes each row's prompt kind.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if manifest.get("mode") == MULTIHEAD_KEY:
        from drirl.multihead_reward import load_multihead_scorer

        scorer = load_multihead_scorer(
            out_dir,
            manifest,
            batch_size=batch_size,
            device=device,
            trust_remote_code=trust_remote_code,
        )
    else:
        models = {
            key: load_model(
                out_dir / folder, device, trust_remote_code=trust_remote_code
            )
            for key, folder in manifest["models"].items()
        }
        logger.info("loaded %d reward model(s) from %s", len(models), out_dir)
        scorer = RewardModelScorer(
            models,
            manifest["routes"],
            max_length=manifest["max_length"],
            batch_size=batch_size,
            response_tokens=manifest.get("response_tokens"),
        )
    router_path = out_dir / ROUTER_FILE
    if router_path.is_file():
        scorer.router_path = router_path
    if manifest.get("kind_heads"):
        from drirl.kind_heads import KIND_ROUTER_FILE, KindHeadScorer

        kind_router = out_dir / KIND_ROUTER_FILE
        return KindHeadScorer(scorer, kind_router if kind_router.is_file() else None)
    return scorer
