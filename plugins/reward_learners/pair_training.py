"""Training pieces shared by the reward learners: settings, modes, the pairwise loss and loop.

Every learner trains with the same logistic (Bradley-Terry) loss on preference pairs,
``-log sigmoid(r(x, chosen) - r(x, rejected) - margin)``, with a margin of 0 unless a pairs
file gives one. The modes decide which models exist:

- ``single``: one sequence-classification model for every category;
- ``separate``: one sequence-classification model per category;
- ``multihead``: one backbone with one head per category (``drirl.multihead_reward``).

A ``RewardUnit`` is one model being trained, whatever the mode, so one loop trains them all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
    set_seed,
)

from drirl.atomic import atomic_folder
from drirl.components import Record, RunContext
from drirl.errors import DrirlError
from drirl.kind_heads import (
    KIND_ROUTER_FILE,
    fit_kind_router,
    is_benign_head,
    qualify_pairs,
)
from drirl.multihead_reward import MultiHeadRewardModel, multihead_tokenizer
from drirl.pairs import (
    PreferencePair,
    warm_start_compliance_pairs,
    warm_start_pairs,
    warm_start_refusal_pairs,
)
from drirl.reward_model import (
    MULTIHEAD_KEY,
    SINGLE_KEY,
    backbone_of,
    encode_sequence,
    head_rewards,
    load_model,
    pad_batch,
    pooled_hidden,
)

logger = logging.getLogger(__name__)

MODES = ("single", "separate", "multihead")
SINGLE_BENIGN_KEY = SINGLE_KEY + "-benign"


@dataclass(frozen=True)
class RewardTrainingSettings:
    """Settings every reward learner shares: the mode and the pairwise training loop."""

    mode: str = field(
        default="single",
        metadata={
            "help": "single: one model for all categories; separate: one per category; "
            "multihead: one backbone with one head per category."
        },
    )
    epochs: float = field(default=1.0, metadata={"help": "Passes over the pairs."})
    learning_rate: float = field(
        default=2e-5, metadata={"help": "AdamW learning rate."}
    )
    batch_size: int = field(default=8, metadata={"help": "Pairs per optimizer step."})
    max_length: int = field(
        default=320,
        metadata={"help": "Maximum tokens of a formatted (prompt, response)."},
    )
    max_new_tokens: int = field(
        default=48, metadata={"help": "Length in tokens of the sampled responses."}
    )
    cut_responses: bool = field(
        default=True,
        metadata={
            "help": "Read only the first max_new_tokens tokens of every response, in "
            "training and in scoring. Whole demonstrations end a sentence and samples "
            "cut at max_new_tokens do not. Without the cut a reward model learns that "
            "difference and pays for short responses rather than for refusing."
        },
    )
    score_batch_size: int = field(
        default=16, metadata={"help": "Sequences per forward pass when scoring."}
    )
    style_matched: bool = field(
        default=False,
        metadata={
            "help": "Also train on pairs whose two sides are both written by the project "
            "(a refusal against a benign answer, an answer against a drafted refusal), so "
            "that refusing or answering, not the writing style, wins the pair."
        },
    )
    warm_start_samples: int = field(
        default=0,
        metadata={
            "help": "Samples per train prompt drawn from the warm-started policy; the one "
            "closest to the prompt's demonstration (text-embedding cosine) is chosen "
            "over the furthest. 0 draws none. Needs the experiment's warm_start."
        },
    )
    warm_start_min_gap: float = field(
        default=0.1,
        metadata={
            "help": "A prompt's warm-start samples make a pair only when their cosine "
            "similarities to the demonstration differ by more than this."
        },
    )
    kind_heads: bool = field(
        default=False,
        metadata={
            "help": "Score benign look-alike prompts with their own head (or model) per "
            "category, so refusing wins on harmful prompts and answering on benign ones "
            "without one head having to tell the two apart."
        },
    )
    warm_start_refusals: bool = field(
        default=False,
        metadata={
            "help": "Rank each benign train prompt's answer above the warm-started "
            "policy's drafted refusal of it. Needs the experiment's warm_start."
        },
    )
    warm_start_compliance: bool = field(
        default=False,
        metadata={
            "help": "Rank each harmful train prompt's refusal above the warm-started "
            "policy's drafted compliance with it. Needs the experiment's warm_start."
        },
    )

    @property
    def response_tokens(self) -> int | None:
        """Tokens of each response a reward model reads, or None to read all of it."""
        return self.max_new_tokens if self.cut_responses else None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode is {self.mode!r}; allowed: {', '.join(MODES)}")
        if not self.epochs > 0:
            raise ValueError(f"epochs is {self.epochs!r}; allowed: a number > 0")
        if not self.learning_rate > 0:
            raise ValueError(
                f"learning_rate is {self.learning_rate!r}; allowed: a number > 0"
            )
        for name in ("batch_size", "max_new_tokens", "score_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} is {value!r}; allowed: an integer >= 1")
        samples = self.warm_start_samples
        if (
            not isinstance(samples, int)
            or isinstance(samples, bool)
            or samples < 0
            or samples == 1
        ):
            raise ValueError(
                f"warm_start_samples is {samples!r}; allowed: 0, or an integer >= 2 "
                "(a pair needs two samples of the same prompt)"
            )
        gap = self.warm_start_min_gap
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 <= gap < 2:
            raise ValueError(
                f"warm_start_min_gap is {gap!r}; allowed: a number in [0, 2)"
            )
        for name in ("warm_start_refusals", "warm_start_compliance", "cut_responses"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"{name} is {getattr(self, name)!r}; allowed: true or false"
                )
        if not isinstance(self.kind_heads, bool):
            raise ValueError(
                f"kind_heads is {self.kind_heads!r}; allowed: true or false"
            )
        if not isinstance(self.style_matched, bool):
            raise ValueError(
                f"style_matched is {self.style_matched!r}; allowed: true or false"
            )
        if not isinstance(self.max_length, int) or self.max_length < 16:
            raise ValueError(
                f"max_length is {self.max_length!r}; allowed: an integer >= 16"
            )


def model_groups(
    mode: str, categories: Sequence[str]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Return the categories each model key serves, and the key of each category."""
    categories = sorted(categories)
    if mode == "single":
        # Benign heads (``kind_heads``) get a second model, so one model never learns both.
        harmful = [c for c in categories if not is_benign_head(c)]
        benign = [c for c in categories if is_benign_head(c)]
        groups = {SINGLE_KEY: harmful}
        if benign:
            groups[SINGLE_BENIGN_KEY] = benign
        groups = {key: members for key, members in groups.items() if members}
    elif mode == "multihead":
        groups = {MULTIHEAD_KEY: categories}
    elif mode == "separate":
        groups = {category: [category] for category in categories}
    else:
        raise ValueError(f"mode is {mode!r}; allowed: {', '.join(MODES)}")
    routes = {c: key for key, members in groups.items() for c in members}
    return groups, routes


def pairwise_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the mean of ``-log sigmoid(chosen - rejected - margin)`` over the pairs."""
    difference = chosen - rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference).mean()


class RewardUnit:
    """One reward model being trained: a sequence-classification model or a multihead one."""

    def __init__(
        self,
        key: str,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        categories: Sequence[str],
    ) -> None:
        self.key = key
        self.model = model
        self.tokenizer = tokenizer
        self.categories = list(categories)
        self.multihead = isinstance(model, MultiHeadRewardModel)

    @classmethod
    def create(
        cls,
        policy_path: Path,
        key: str,
        categories: Sequence[str],
        seed: int,
        *,
        trust_remote_code: bool = False,
    ) -> RewardUnit:
        """Build an untrained model from the policy; ``key`` multihead gives one head each."""
        set_seed(seed)
        tokenizer = multihead_tokenizer(
            policy_path, trust_remote_code=trust_remote_code
        )
        if key == MULTIHEAD_KEY:
            model = MultiHeadRewardModel.from_policy(
                policy_path, categories, seed, trust_remote_code=trust_remote_code
            )
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                policy_path,
                num_labels=1,
                dtype=torch.float32,
                trust_remote_code=trust_remote_code,
            )
            model.config.pad_token_id = tokenizer.pad_token_id
        return cls(key, model, tokenizer, categories)

    @classmethod
    def load(
        cls,
        folder: Path,
        key: str,
        categories: Sequence[str],
        device: str = "cpu",
        *,
        trust_remote_code: bool = False,
    ) -> RewardUnit:
        """Load a unit saved by ``save`` to continue training it."""
        if key == MULTIHEAD_KEY:
            model, tokenizer = MultiHeadRewardModel.load(
                folder, device, trust_remote_code=trust_remote_code
            )
        else:
            model, tokenizer = load_model(
                folder, device, trust_remote_code=trust_remote_code
            )
        return cls(key, model, tokenizer, categories)

    def head_ids(self, categories: Sequence[str]) -> torch.Tensor:
        """Return the head of each category: its row for multihead, else 0."""
        if self.multihead:
            return self.model.head_ids(categories)
        return torch.zeros(len(categories), dtype=torch.long)

    def rewards(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        head_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Return the reward of each row under its head, shape (B,), with gradients."""
        if self.multihead:
            return self.model(input_ids, attention_mask, head_ids)
        pooled = pooled_hidden(backbone_of(self.model), input_ids, attention_mask)
        return head_rewards(self.model.score, pooled, head_ids)

    def save(self, folder: Path) -> None:
        """Write the model as safetensors with its tokenizer, replacing ``folder`` whole."""
        if self.multihead:
            self.model.save(folder, self.tokenizer)
            return
        with atomic_folder(Path(folder)) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)


@dataclass
class EncodedPairs:
    """Token ids, head indices and margins of preference pairs, in pair order."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    head_ids: torch.Tensor
    margins: torch.Tensor


def encode_pairs(
    unit: RewardUnit,
    pairs: Sequence[PreferencePair],
    max_length: int,
    response_tokens: int | None = None,
) -> EncodedPairs:
    """Tokenize every pair with ``encode_sequence``, the function scoring uses."""
    tokenizer = unit.tokenizer

    def encode(prompt: str, response: str) -> list[int]:
        return encode_sequence(tokenizer, prompt, response, max_length, response_tokens)

    return EncodedPairs(
        chosen=[encode(p.prompt, p.chosen) for p in pairs],
        rejected=[encode(p.prompt, p.rejected) for p in pairs],
        head_ids=unit.head_ids([p.category for p in pairs]),
        margins=torch.tensor([p.margin for p in pairs], dtype=torch.float32),
    )


def _batch_rewards(
    unit: RewardUnit, encoded: EncodedPairs, rows: list[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (chosen, rejected) rewards of ``rows``; both halves share one forward pass."""
    sequences = [encoded.chosen[i] for i in rows] + [encoded.rejected[i] for i in rows]
    input_ids, attention_mask = pad_batch(sequences, unit.tokenizer.pad_token_id)
    heads = encoded.head_ids[rows].repeat(2)
    rewards = unit.rewards(input_ids.to(device), attention_mask.to(device), heads)
    return rewards[: len(rows)], rewards[len(rows) :]


@torch.no_grad()
def pair_margins(
    unit: RewardUnit,
    pairs: Sequence[PreferencePair],
    *,
    max_length: int,
    response_tokens: int | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """Return r(x, chosen) - r(x, rejected) of every pair, float32 shape (N,)."""
    encoded = encode_pairs(unit, pairs, max_length, response_tokens)
    device = next(unit.model.parameters()).device
    unit.model.eval()
    margins = []
    for start in range(0, len(pairs), batch_size):
        rows = list(range(start, min(start + batch_size, len(pairs))))
        chosen, rejected = _batch_rewards(unit, encoded, rows, device)
        margins.append((chosen - rejected).float().cpu())
    return torch.cat(margins) if margins else torch.zeros(0)


def train_unit(
    unit: RewardUnit,
    pairs: Sequence[PreferencePair],
    settings: RewardTrainingSettings,
    *,
    seed: int,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Train ``unit`` on ``pairs`` with AdamW and the pairwise loss; return the loss log.

    Steps = ceil(epochs x batches per epoch), so a fractional ``epochs`` trains on part of
    a pass. The pair order is reshuffled each epoch with a generator seeded by ``seed``.
    """
    if not pairs:
        raise DrirlError(
            f"reward model {unit.key!r} has no preference pairs to train on"
        )
    encoded = encode_pairs(
        unit, pairs, settings.max_length, settings.response_tokens
    )
    device = next(unit.model.parameters()).device
    batches_per_epoch = math.ceil(len(pairs) / settings.batch_size)
    steps = max(1, math.ceil(settings.epochs * batches_per_epoch))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        [p for p in unit.model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
    )

    unit.model.train()
    order: list[int] = []
    log_history: list[dict[str, Any]] = []
    progress = tqdm(
        total=steps,
        desc=f"reward model {unit.key}",
        unit="step",
        disable=not show_progress,
    )
    for step in range(1, steps + 1):
        if not order:
            order = torch.randperm(len(pairs), generator=generator).tolist()
        rows, order = order[: settings.batch_size], order[settings.batch_size :]
        chosen, rejected = _batch_rewards(unit, encoded, rows, device)
        loss = pairwise_loss(chosen, rejected, encoded.margins[rows].to(device))
        if not torch.isfinite(loss):
            raise DrirlError(
                f"reward model {unit.key!r} reached a non-finite loss at step {step}; "
                f"lower learning_rate (now {settings.learning_rate})"
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log_history.append(
            {
                "step": step,
                "loss": float(loss.detach()),
                "accuracy": float((chosen > rejected).float().mean()),
            }
        )
        progress.set_postfix(loss=f"{log_history[-1]['loss']:.3f}")
        progress.update()
    progress.close()
    unit.model.eval()
    mean_loss = sum(row["loss"] for row in log_history) / len(log_history)
    logger.info(
        "reward model %r: %d steps on %d pairs, mean loss %.4f",
        unit.key,
        steps,
        len(pairs),
        mean_loss,
    )
    return {"train_loss": mean_loss, "log_history": log_history}


def group_pairs(
    pairs: Sequence[PreferencePair], groups: dict[str, list[str]]
) -> dict[str, list[PreferencePair]]:
    """Split pairs by the model key that serves their category, dropping empty keys."""
    key_of = {c: key for key, members in groups.items() for c in members}
    grouped: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        grouped.setdefault(key_of[pair.category], []).append(pair)
    return grouped


def ranking_summary(margins: torch.Tensor) -> dict[str, float]:
    """Return the mean of r(chosen) - r(rejected), the pairwise loss and the accuracy."""
    if margins.numel() == 0:
        return {"mean_margin": 0.0, "loss": 0.0, "accuracy": 0.0}
    return {
        "mean_margin": float(margins.mean()),
        "loss": float(-F.logsigmoid(margins).mean()),
        "accuracy": float((margins > 0).float().mean()),
    }


def train_models(
    policy_path: Path,
    pairs: Sequence[PreferencePair],
    out_dir: Path,
    settings: RewardTrainingSettings,
    ctx: RunContext,
    *,
    resume: bool = False,
    measure: bool = False,
    seed_offset: int = 0,
) -> dict[str, Any]:
    """Train the mode's models on ``pairs``, save each under ``out_dir / key``.

    With ``resume`` a model folder already in ``out_dir`` is trained further instead of
    starting again from the policy. With ``measure`` each model's ranking of its own pairs
    is recorded before and after training (see ``ranking_summary``). Returns the manifest
    fields that describe the models.
    """
    categories = sorted({pair.category for pair in pairs})
    groups, routes = model_groups(settings.mode, categories)
    grouped = group_pairs(pairs, groups)
    results: dict[str, dict[str, Any]] = {}
    for key, members in groups.items():
        group = grouped.get(key, [])
        folder = Path(out_dir) / key
        if resume and folder.is_dir():
            unit = RewardUnit.load(
                folder,
                key,
                members,
                ctx.device,
                trust_remote_code=ctx.trust_remote_code,
            )
        else:
            unit = RewardUnit.create(
                policy_path,
                key,
                members,
                ctx.seed,
                trust_remote_code=ctx.trust_remote_code,
            )
            unit.model.to(ctx.device)
        logger.info("training reward model %r on %d pairs", key, len(group))
        entry: dict[str, Any] = {"pairs": len(group)}
        if measure:
            entry["before"] = ranking_summary(
                pair_margins(
                    unit,
                    group,
                    max_length=settings.max_length,
                    response_tokens=settings.response_tokens,
                )
            )
        entry.update(
            train_unit(
                unit,
                group,
                settings,
                seed=ctx.seed + seed_offset,
                show_progress=ctx.show_progress,
            )
        )
        if measure:
            entry["after"] = ranking_summary(
                pair_margins(
                    unit,
                    group,
                    max_length=settings.max_length,
                    response_tokens=settings.response_tokens,
                )
            )
        unit.save(folder)
        results[key] = entry
        del unit

    manifest: dict[str, Any] = {
        "mode": settings.mode,
        "kind_heads": settings.kind_heads,
        "categories": categories,
        "models": {key: key for key in groups},
        "routes": routes,
        "max_length": settings.max_length,
        "response_tokens": settings.response_tokens,
        "seed": ctx.seed,
        "policy_path": str(policy_path),
        "pairs": {key: r["pairs"] for key, r in results.items()},
        "final_train_loss": {key: r["train_loss"] for key, r in results.items()},
        "train_log": {key: r["log_history"] for key, r in results.items()},
    }
    if measure:
        manifest["ranking"] = {
            key: {"before": r["before"], "after": r["after"]}
            for key, r in results.items()
        }
    return manifest


def warm_start_training_pairs(
    train: Sequence[Record],
    out_dir: Path,
    settings: RewardTrainingSettings,
    ctx: RunContext,
) -> list[PreferencePair]:
    """Return the pairs drawn from the warm-started policy that ``settings`` ask for."""
    pairs: list[PreferencePair] = []
    if settings.warm_start_samples:
        pairs += warm_start_pairs(
            train,
            out_dir,
            count=settings.warm_start_samples,
            min_gap=settings.warm_start_min_gap,
            max_new_tokens=settings.max_new_tokens,
            ctx=ctx,
        )
    if settings.warm_start_refusals:
        pairs += warm_start_refusal_pairs(
            train, out_dir, max_new_tokens=settings.max_new_tokens, ctx=ctx
        )
    if settings.warm_start_compliance:
        pairs += warm_start_compliance_pairs(
            train, out_dir, max_new_tokens=settings.max_new_tokens, ctx=ctx
        )
    return pairs


def save_kind_router(
    train: Sequence[Record],
    out_dir: Path,
    settings: RewardTrainingSettings,
    ctx: RunContext,
) -> Any:
    """Fit and save the kind router when ``settings`` ask for ``kind_heads``, else return None."""
    if not settings.kind_heads:
        return None
    router = fit_kind_router(train, ctx.text_encoder)
    router.save(Path(out_dir) / KIND_ROUTER_FILE)
    return router


def kind_head_pairs(
    pairs: Sequence[PreferencePair], train: Sequence[Record], router: Any
) -> list[PreferencePair]:
    """Return ``pairs`` named by the head they train, or unchanged when ``router`` is None."""
    if router is None:
        return list(pairs)
    return qualify_pairs(pairs, train, router)
