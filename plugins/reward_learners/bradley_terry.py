"""The ``bradley_terry`` reward learner: a reward model trained once on fixed preference pairs.

Each harmful train prompt pairs its safe demonstration (chosen) with a greedy sample of the
base policy (rejected). Each benign look-alike pairs its helpful answer (chosen) with a
refusal from the same category (rejected), as ``drirl.pairs`` describes. The loss is the
Bradley-Terry logistic loss ``-log sigmoid(r(x, chosen) - r(x, rejected))``, trained with
TRL's RewardTrainer on an AutoModelForSequenceClassification (num_labels=1) initialised from
the policy.

Assumptions: the policy folder is a local causal LM with a chat template, and its tokenizer
has a token other than its end-of-turn token to pad with (see
``drirl.reward_model.distinct_pad_token``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from drirl import hookimpl
from drirl.components import Record, RewardLearner, RunContext
from drirl.dataset import select
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.pairs import (
    PreferencePair,
    build_pairs,
    load_or_generate_samples,
    pairs_to_rows,
)
from drirl.reward_model import (
    SINGLE_KEY,
    RewardModelScorer,
    distinct_pad_token,
    encode_sequence,
    load_scorer,
    write_manifest,
)

logger = logging.getLogger(__name__)

MODES = ("single", "separate")
PLANNED_MODES = ("multihead",)
SAMPLES_FILE = "samples.jsonl"
PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class BradleyTerrySettings:
    """Settings of the ``bradley_terry`` reward learner."""

    mode: str = field(
        default="single",
        metadata={
            "help": "single: one model for all categories; separate: one per category."
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
        default=48, metadata={"help": "Length in tokens of the base-model samples."}
    )
    score_batch_size: int = field(
        default=16, metadata={"help": "Sequences per forward pass when scoring."}
    )

    def __post_init__(self) -> None:
        if self.mode in PLANNED_MODES:
            raise ValueError(
                f"mode {self.mode!r} of bradley_terry is not implemented yet; "
                f"allowed: {', '.join(MODES)}"
            )
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
        if not isinstance(self.max_length, int) or self.max_length < 16:
            raise ValueError(
                f"max_length is {self.max_length!r}; allowed: an integer >= 16"
            )


class BradleyTerry(RewardLearner):
    """Reward models trained with the Bradley-Terry loss on demonstration-vs-sample pairs."""

    name: ClassVar[str] = "bradley_terry"
    Settings: ClassVar[type] = BradleyTerrySettings

    def train(
        self,
        policy_path: Path,
        records: Sequence[Record],
        out_dir: Path,
        ctx: RunContext,
    ) -> None:
        """Sample the base policy, build pairs, train and save the reward model(s)."""
        settings: BradleyTerrySettings = self.settings
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        train = select(records, split="train")
        if not train:
            raise DrirlError(
                "no records with split 'train'; the reward learner has no data"
            )

        samples = load_or_generate_samples(
            Path(policy_path),
            train,
            out_dir / SAMPLES_FILE,
            max_new_tokens=settings.max_new_tokens,
            ctx=ctx,
        )
        pairs = build_pairs(train, samples)
        _write_jsonl(out_dir / PAIRS_FILE, pairs_to_rows(pairs))
        categories = sorted({pair.category for pair in pairs})
        if not pairs:
            raise DrirlError("the train records produced no preference pairs")

        if settings.mode == "single":
            groups = {SINGLE_KEY: pairs}
            routes = {category: SINGLE_KEY for category in categories}
        else:
            groups = {c: [p for p in pairs if p.category == c] for c in categories}
            routes = {category: category for category in categories}

        results: dict[str, dict[str, Any]] = {}
        for key, group in groups.items():
            logger.info("training reward model %r on %d pairs", key, len(group))
            results[key] = train_reward_model(
                Path(policy_path), group, out_dir / key, settings, ctx
            )

        write_manifest(
            out_dir,
            {
                "learner": self.name,
                "mode": settings.mode,
                "categories": categories,
                "models": {key: key for key in groups},
                "routes": routes,
                "max_length": settings.max_length,
                "settings": dataclasses.asdict(settings),
                "seed": ctx.seed,
                "policy_path": str(policy_path),
                "pairs": {key: len(group) for key, group in groups.items()},
                "final_train_loss": {
                    key: r["train_loss"] for key, r in results.items()
                },
                "train_log": {key: r["log_history"] for key, r in results.items()},
            },
        )

    def load(self, out_dir: Path, ctx: RunContext) -> RewardModelScorer:
        """Load the saved reward model(s) as a scorer routed by category."""
        return load_scorer(
            Path(out_dir), batch_size=self.settings.score_batch_size, device=ctx.device
        )


def train_reward_model(
    policy_path: Path,
    pairs: Sequence[PreferencePair],
    model_dir: Path,
    settings: BradleyTerrySettings,
    ctx: RunContext,
) -> dict[str, Any]:
    """Train one reward model on ``pairs`` with TRL's RewardTrainer and save it to ``model_dir``.

    The model is written under a temporary name and renamed, so ``model_dir`` is either
    complete or absent. Returns the mean training loss and TRL's log history.
    """
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PrinterCallback,
        set_seed,
    )
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    tokenizer.pad_token = distinct_pad_token(tokenizer)
    tokenizer.padding_side = "right"

    # The sequences are tokenized here with the function the scorer uses. Given token ids,
    # TRL skips its own chat formatting, so training uses the tokens that scoring reads.
    dataset = Dataset.from_list(
        [
            {
                "chosen_ids": encode_sequence(
                    tokenizer, p.prompt, p.chosen, settings.max_length
                ),
                "rejected_ids": encode_sequence(
                    tokenizer, p.prompt, p.rejected, settings.max_length
                ),
            }
            for p in pairs
        ]
    )

    set_seed(ctx.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        policy_path, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(
        tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent)
    )
    try:
        args = RewardConfig(
            output_dir=str(work_dir / "trainer"),
            num_train_epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            per_device_train_batch_size=settings.batch_size,
            max_length=settings.max_length,
            use_cpu=ctx.device == "cpu",
            bf16=False,
            fp16=False,
            # TRL turns checkpointing on by default; transformers 5 names it this way.
            activation_checkpointing=False,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            seed=ctx.seed,
            data_seed=ctx.seed,
            disable_tqdm=not ctx.show_progress,
        )
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer
        )
        if not ctx.show_progress:
            # With tqdm disabled, transformers prints every log dict to stdout instead.
            trainer.remove_callback(PrinterCallback)
        result = trainer.train()

        saved = work_dir / "model"
        trainer.model.save_pretrained(saved, safe_serialization=True)
        tokenizer.save_pretrained(saved)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        saved.rename(model_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    return {
        "train_loss": float(result.training_loss),
        "log_history": trainer.state.log_history,
    }


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


@hookimpl
def register_reward_learners(register: Register) -> None:
    """Register the bradley_terry reward learner."""
    register(BradleyTerry)
