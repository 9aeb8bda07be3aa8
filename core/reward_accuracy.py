"""Held-out accuracy of trained reward models and of the category router.

The pairs come from the eval split, built as ``drirl.pairs`` builds training pairs:

- harmful prompt: its safe demonstration against a greedy base-model sample;
- benign look-alike: its compliant answer against a refusal of the same category, where the
  compliant answer must win.

A pair counts as correct when the chosen response gets the higher reward. The metrics are
``reward_accuracy/<category>`` (each category's model, or head, on its own pairs),
``reward_accuracy/harmful``, ``reward_accuracy/benign`` and ``reward_accuracy/all``, plus
``routing_accuracy`` when the learner saved a router. Each rate carries its pair count and a
bootstrap 95% confidence interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drirl.atomic import write_json_atomic, write_text_atomic
from drirl.components import Metric, Record, RewardLearner, RunContext
from drirl.kind_heads import score_with_kinds
from drirl.pairs import (
    BENIGN_PAIR,
    HARMFUL_PAIR,
    STYLE_MATCHED_PAIRS,
    build_pairs,
    load_or_generate_samples,
)
from drirl.reward_model import ROUTER_FILE
from drirl.stats import rate_metric

logger = logging.getLogger(__name__)

METRIC_PREFIX = "reward_accuracy"
ROUTING_METRIC = "routing_accuracy"
METRICS_FILE = "metrics.json"
PAIRS_FILE = "pairs.jsonl"
SAMPLES_FILE = "samples.jsonl"
DEFAULT_SAMPLE_TOKENS = 48


def evaluate_reward_models(
    learner: RewardLearner,
    reward_dir: Path,
    policy_path: Path,
    evaluation: Sequence[Record],
    out_dir: Path,
    ctx: RunContext,
) -> dict[str, Any]:
    """Score the eval pairs with the saved reward models; write metrics.json and pairs.jsonl.

    Categories the reward models do not know are left out, with a warning.
    """
    out_dir = Path(out_dir)
    max_new_tokens = getattr(learner.settings, "max_new_tokens", DEFAULT_SAMPLE_TOKENS)
    samples = load_or_generate_samples(
        Path(policy_path),
        evaluation,
        out_dir / SAMPLES_FILE,
        max_new_tokens=max_new_tokens,
        ctx=ctx,
        split="eval",
    )
    scorer = learner.load(Path(reward_dir), ctx)
    known = set(getattr(scorer, "categories", []))
    # The style-matched pairs are scored whatever the training used: a model that fails
    # them rewards the project's writing style rather than refusing or answering.
    pairs = build_pairs(evaluation, samples, split="eval", style_matched=True)
    skipped = sorted({p.category for p in pairs if known and p.category not in known})
    if skipped:
        logger.warning(
            "leaving out eval pairs of categories without a reward model: %s",
            ", ".join(skipped),
        )
    pairs = [p for p in pairs if not known or p.category in known]

    metrics: dict[str, Metric] = {}
    rows = []
    if pairs:
        prompts = [p.prompt for p in pairs]
        categories = [p.category for p in pairs]
        kind_of = {record.id: record.kind for record in evaluation}
        kinds = [kind_of.get(p.record_id) for p in pairs]
        chosen = score_with_kinds(
            scorer, prompts, [p.chosen for p in pairs], categories, kinds
        )
        rejected = score_with_kinds(
            scorer, prompts, [p.rejected for p in pairs], categories, kinds
        )
        correct = (chosen > rejected).tolist()
        metrics = accuracy_metrics(pairs, correct)
        for pair, good, c, r in zip(pairs, correct, chosen.tolist(), rejected.tolist()):
            rows.append(
                {
                    "record_id": pair.record_id,
                    "category": pair.category,
                    "source": pair.source,
                    "chosen_reward": c,
                    "rejected_reward": r,
                    "correct": good,
                }
            )

    router_path = Path(reward_dir) / ROUTER_FILE
    if router_path.is_file():
        from drirl.routing import CentroidRouter

        routed = CentroidRouter.load(router_path).routed_correctly(evaluation)
        metrics[ROUTING_METRIC] = rate_metric(routed, seed=ctx.seed)

    write_json_atomic(out_dir / METRICS_FILE, metrics)
    write_text_atomic(
        out_dir / PAIRS_FILE,
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
    )
    return {"pairs": len(rows), "metrics": len(metrics)}


def accuracy_metrics(
    pairs: Sequence[Any], correct: Sequence[bool], seed: int = 0
) -> dict[str, Metric]:
    """Group per-pair correctness into the per-category, per-kind and overall rates."""
    groups: dict[str, list[bool]] = {}
    kind = {HARMFUL_PAIR: "harmful", BENIGN_PAIR: "benign"}
    for pair, good in zip(pairs, correct):
        if pair.source in STYLE_MATCHED_PAIRS:
            # Their own rates, so the per-category and overall rates keep their meaning.
            groups.setdefault(f"{METRIC_PREFIX}/{pair.source}", []).append(good)
            continue
        groups.setdefault(f"{METRIC_PREFIX}/{pair.category}", []).append(good)
        if pair.source in kind:
            groups.setdefault(f"{METRIC_PREFIX}/{kind[pair.source]}", []).append(good)
        groups.setdefault(f"{METRIC_PREFIX}/all", []).append(good)
    return {
        name: rate_metric(flags, seed=seed) for name, flags in sorted(groups.items())
    }
