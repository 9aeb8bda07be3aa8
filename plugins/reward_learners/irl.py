"""The ``irl`` reward learner: maximum-likelihood inverse RL from safe demonstrations.

Source: Li et al. 2024, "Getting More Juice Out of the SFT Data: Reward Learning from Human
Demonstration Improves SFT for LLM Alignment". The reward model and the policy alternate
for ``rounds`` rounds. Each round:

1. samples one response from the current policy for every harmful train prompt;
2. updates the reward model(s) with ``-log sigmoid(r(x, y_demo) - r(x, y_policy))``, the
   logistic loss that ranks each demonstration above the policy's sample. The benign
   look-alike pairs of ``drirl.pairs`` (helpful answer above a refusal) are trained in
   the same batches, so the reward does not simply pay for refusing;
3. moves the policy ``policy_steps`` steps toward the updated reward with the optimizer
   plugin named by ``policy_optimizer`` (default ``grpo``).

As the policy improves its samples look more like demonstrations, so the negatives get
harder each round. Only the reward models are kept. The intermediate policies are deleted,
because the optimize stage trains the final policy from the base model.

Assumptions: the same as ``bradley_terry``. The AdamW state of a reward model restarts
each round, because each round loads the model saved by the previous one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import (
    Optimizer,
    Record,
    RewardLearner,
    RewardScorer,
    RunContext,
)
from drirl.dataset import select
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.pairs import (
    PreferencePair,
    build_pairs,
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
from drirl.routing import ROUTER_FILE, CentroidRouter
from drirl.settings import build_settings

logger = logging.getLogger(__name__)

ROUNDS_DIR = "rounds"
POLICY_WORK_DIR = ".irl_policy"


@dataclass(frozen=True)
class IRLSettings(RewardTrainingSettings):
    """Settings of the ``irl`` reward learner; ``epochs`` counts passes per round."""

    mode: str = field(
        default="separate",
        metadata={
            "help": "separate: one model per category (the reference method); "
            "multihead: one backbone with one head per category; single: one model."
        },
    )
    rounds: int = field(
        default=2, metadata={"help": "Alternations of reward update and policy update."}
    )
    policy_steps: int = field(
        default=2, metadata={"help": "Optimizer steps on the policy in each round."}
    )
    policy_optimizer: str = field(
        default="grpo",
        metadata={"help": "Name of the optimizer plugin that moves the policy."},
    )
    policy_settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Settings of the policy optimizer (its `training` fields, except "
            "steps, which policy_steps sets)."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of the policy samples."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rounds", "policy_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} is {value!r}; allowed: an integer >= 1")
        if not isinstance(self.policy_optimizer, str) or not self.policy_optimizer:
            raise ValueError(
                f"policy_optimizer is {self.policy_optimizer!r}; allowed: an optimizer name"
            )
        if not isinstance(self.policy_settings, dict):
            raise ValueError(
                f"policy_settings is {self.policy_settings!r}; allowed: a mapping of "
                "optimizer settings"
            )
        if "steps" in self.policy_settings:
            raise ValueError("policy_settings sets 'steps'; set policy_steps instead")
        if not self.temperature > 0:
            raise ValueError(
                f"temperature is {self.temperature!r}; allowed: a number > 0"
            )


def build_policy_optimizer(settings: IRLSettings) -> Optimizer:
    """Look up ``policy_optimizer`` in the plugin registry and build it with its settings."""
    from drirl.plugin_manager import load_plugins

    optimizer_cls = load_plugins().get("optimizer", settings.policy_optimizer)
    if not optimizer_cls.needs_reward:
        raise DrirlError(
            f"policy_optimizer {settings.policy_optimizer!r} does not train against a "
            "reward scorer, so IRL cannot move the policy with it; use grpo or grpo_s"
        )
    values = {**settings.policy_settings, "steps": settings.policy_steps}
    optimizer_settings = build_settings(
        optimizer_cls.Settings,
        values,
        file=None,
        field="reward.settings.policy_settings",
        component=f"optimizer {settings.policy_optimizer!r}",
    )
    return optimizer_cls(optimizer_settings)


class IRL(RewardLearner):
    """Reward models learned by maximum-likelihood IRL, alternating with policy updates."""

    name: ClassVar[str] = "irl"
    Settings: ClassVar[type] = IRLSettings

    def train(
        self,
        policy_path: Path,
        records: Sequence[Record],
        out_dir: Path,
        ctx: RunContext,
    ) -> None:
        """Run the rounds; save the reward model(s), the router and each round's pairs."""
        settings: IRLSettings = self.settings
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        train = select(records, split="train")
        harmful = select(train, kind="harmful")
        if not harmful:
            raise DrirlError(
                "no harmful records with split 'train'; IRL needs demonstrations"
            )
        optimizer = build_policy_optimizer(settings)
        CentroidRouter.fit(train, ctx.text_encoder).save(out_dir / ROUTER_FILE)

        policy = Path(policy_path)
        work_dir = out_dir / POLICY_WORK_DIR
        rounds: list[dict[str, Any]] = []
        manifest: dict[str, Any] = {}
        # Drawn once: the warm-started policy does not change between rounds.
        warm_pairs = warm_start_training_pairs(train, out_dir, settings, ctx)
        kind_router = save_kind_router(train, out_dir, settings, ctx)
        try:
            for round_no in range(1, settings.rounds + 1):
                manifest, summary = self._round(
                    round_no,
                    Path(policy_path),
                    policy,
                    train,
                    warm_pairs,
                    out_dir,
                    ctx,
                    kind_router=kind_router,
                )
                logger.info(
                    "IRL round %d: moving the policy %d step(s) with %s",
                    round_no,
                    settings.policy_steps,
                    settings.policy_optimizer,
                )
                scorer = self.load(out_dir, ctx)
                result = optimizer.train(
                    policy, train, scorer, None, work_dir / f"round_{round_no}", ctx
                )
                del scorer
                if policy.parent.parent == work_dir:
                    shutil.rmtree(policy.parent, ignore_errors=True)
                policy = result.model_path
                summary["policy_log"] = result.log_history
                rounds.append(summary)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

        manifest["rounds"] = rounds
        write_manifest(out_dir, manifest)

    def _round(
        self,
        round_no: int,
        base_policy: Path,
        policy: Path,
        train: Sequence[Record],
        warm_pairs: Sequence[PreferencePair],
        out_dir: Path,
        ctx: RunContext,
        *,
        kind_router: Any = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sample the policy, update the reward model(s) and write the manifest.

        ``warm_pairs`` (the warm-started policy's samples) join every round's pairs.
        With ``kind_router`` each pair is named by the head it trains.
        """
        from drirl.generation import generate_responses

        settings: IRLSettings = self.settings
        harmful = select(train, kind="harmful")
        responses = generate_responses(
            policy,
            [record.prompt for record in harmful],
            max_new_tokens=settings.max_new_tokens,
            do_sample=True,
            temperature=settings.temperature,
            seed=ctx.seed + round_no,
            show_progress=ctx.show_progress,
            description=f"IRL round {round_no} policy samples",
            trust_remote_code=ctx.trust_remote_code,
        )
        samples = {record.id: text for record, text in zip(harmful, responses)}
        pairs = build_pairs(train, samples, style_matched=settings.style_matched)
        pairs += warm_pairs
        pairs = kind_head_pairs(pairs, train, kind_router)
        _write_jsonl(
            out_dir / ROUNDS_DIR / f"round_{round_no}.jsonl", pairs_to_rows(pairs)
        )

        manifest = train_models(
            base_policy,
            pairs,
            out_dir,
            settings,
            ctx,
            resume=round_no > 1,
            measure=True,
            seed_offset=round_no,
        )
        manifest.update(
            {"learner": self.name, "settings": dataclasses.asdict(settings)}
        )
        write_manifest(out_dir, manifest)
        summary = {
            "round": round_no,
            "pairs": len(pairs),
            "ranking": manifest["ranking"],
            "train_loss": manifest["final_train_loss"],
        }
        for key, ranking in manifest["ranking"].items():
            logger.info(
                "IRL round %d, reward model %r: pair accuracy %.2f -> %.2f",
                round_no,
                key,
                ranking["before"]["accuracy"],
                ranking["after"]["accuracy"],
            )
        return manifest, summary

    def load(self, out_dir: Path, ctx: RunContext) -> RewardScorer:
        """Load the saved reward model(s) as a scorer routed by category."""
        return load_scorer(
            Path(out_dir),
            batch_size=self.settings.score_batch_size,
            device=ctx.device,
            trust_remote_code=ctx.trust_remote_code,
        )


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")


@hookimpl
def register_reward_learners(register: Register) -> None:
    """Register the irl reward learner."""
    register(IRL)
