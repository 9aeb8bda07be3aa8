"""The ``bradley_terry`` reward learner: reward models trained once on fixed preference pairs.

Pairs come from one of two places:

- a pairs file (setting ``pairs_file``, JSONL or CSV) with prompt, chosen, rejected and
  optional margin and category columns; rows without a category are routed to the nearest
  category of the train prompts (``drirl.routing``);
- otherwise the train records, as ``drirl.pairs`` describes: each harmful prompt pairs its
  safe demonstration (chosen) with a greedy base-model sample drawn once (rejected), and
  each benign look-alike pairs its helpful answer with a refusal of the same category.

The loss is ``-log sigmoid(r(x, chosen) - r(x, rejected) - margin)`` (margin 0 unless the
file gives one), trained by the loop in ``pair_training`` for every mode.

Assumptions: the policy folder is a local causal LM with a chat template, and its tokenizer
has a token other than its end-of-turn token to pad with (see
``drirl.reward_model.distinct_pad_token``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import Record, RewardLearner, RewardScorer, RunContext
from drirl.dataset import select
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.pairs import (
    PreferencePair,
    build_pairs,
    load_or_generate_samples,
    load_pairs_file,
    pairs_to_rows,
)
from drirl.plugins.reward_learners.pair_training import (
    RewardTrainingSettings,
    kind_head_pairs,
    save_kind_router,
    train_models,
    warm_start_training_pairs,
)
from drirl.reward_model import load_scorer, write_manifest
from drirl.routing import ROUTER_FILE, CentroidRouter, fill_categories

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class BradleyTerrySettings(RewardTrainingSettings):
    """Settings of the ``bradley_terry`` reward learner."""

    pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL or CSV file of preference pairs (columns prompt, chosen, "
            "rejected, optional margin and category), relative to the working "
            "directory. Without it, demonstrations are paired with base-model samples."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairs_file is not None and (
            not isinstance(self.pairs_file, str) or not self.pairs_file.strip()
        ):
            raise ValueError(
                f"pairs_file is {self.pairs_file!r}; allowed: a file path or null"
            )


class BradleyTerry(RewardLearner):
    """Reward models trained with the Bradley-Terry loss on fixed preference pairs."""

    name: ClassVar[str] = "bradley_terry"
    Settings: ClassVar[type] = BradleyTerrySettings

    def train(
        self,
        policy_path: Path,
        records: Sequence[Record],
        out_dir: Path,
        ctx: RunContext,
    ) -> None:
        """Build or read the pairs, train and save the reward model(s) and the router."""
        settings: BradleyTerrySettings = self.settings
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        train = select(records, split="train")
        if settings.pairs_file is None and not train:
            raise DrirlError(
                "no records with split 'train'; the reward learner has no data"
            )
        router = CentroidRouter.fit(train, ctx.text_encoder) if train else None
        if settings.pairs_file is not None:
            pairs = self._file_pairs(Path(settings.pairs_file), train, router)
        else:
            samples = load_or_generate_samples(
                Path(policy_path),
                train,
                out_dir / SAMPLES_FILE,
                max_new_tokens=settings.max_new_tokens,
                ctx=ctx,
            )
            pairs = build_pairs(
                train, samples, style_matched=settings.style_matched
            )
        pairs += warm_start_training_pairs(train, out_dir, settings, ctx)
        if not pairs:
            raise DrirlError("the train records produced no preference pairs")
        kind_router = save_kind_router(train, out_dir, settings, ctx)
        pairs = kind_head_pairs(pairs, train, kind_router)
        _write_jsonl(out_dir / PAIRS_FILE, pairs_to_rows(pairs))

        manifest = train_models(Path(policy_path), pairs, out_dir, settings, ctx)
        if router is not None:
            router.save(out_dir / ROUTER_FILE)
        manifest.update(
            {
                "learner": self.name,
                "settings": dataclasses.asdict(settings),
                "pairs_source": settings.pairs_file or "demonstrations_vs_base_samples",
            }
        )
        write_manifest(out_dir, manifest)

    def _file_pairs(
        self, path: Path, train: Sequence[Record], router: CentroidRouter | None
    ) -> list[PreferencePair]:
        pairs = load_pairs_file(path)
        categories = fill_categories(
            [p.prompt for p in pairs], [p.category for p in pairs], router
        )
        known = {record.category for record in train}
        unknown = sorted({c for c in categories if known and c not in known})
        if unknown:
            raise DrirlError(
                f"{path}: categories {', '.join(unknown)} are not among the experiment's "
                f"categories ({', '.join(sorted(known))}); fix the category column or "
                "add the categories to the experiment"
            )
        return [
            dataclasses.replace(pair, category=category)
            for pair, category in zip(pairs, categories)
        ]

    def load(self, out_dir: Path, ctx: RunContext) -> RewardScorer:
        """Load the saved reward model(s) as a scorer routed by category."""
        return load_scorer(
            Path(out_dir),
            batch_size=self.settings.score_batch_size,
            device=ctx.device,
            trust_remote_code=ctx.trust_remote_code,
        )


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


@hookimpl
def register_reward_learners(register: Register) -> None:
    """Register the bradley_terry reward learner."""
    register(BradleyTerry)
