"""A benchmark that generates responses through lm-eval and rates them with a judge.

Subclasses choose which eval-split records they use (harmful or benign), the metric prefix,
and which judge labels count as a hit. Every benchmark writes ``samples.jsonl`` to its output
folder and reports a rate per category plus ``<prefix>/all``, each with its sample count and
a bootstrap confidence interval.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from drirl.components import (
    Benchmark,
    Judge,
    Judgement,
    Metric,
    Record,
    RecordKind,
    RunContext,
)
from drirl.dataset import select
from drirl.errors import DrirlError
from drirl.lm_eval_runner import generate_with_lm_eval
from drirl.stats import rate_metric

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgedBenchmarkSettings:
    """Settings shared by the judged generation benchmarks."""

    max_new_tokens: int = field(
        default=64, metadata={"help": "maximum number of generated tokens per response"}
    )
    batch_size: int = field(
        default=16, metadata={"help": "prompts per generation batch"}
    )
    limit_per_category: int | None = field(
        default=None,
        metadata={
            "help": "evaluate only the first N prompts of each category (all if null)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        limit = self.limit_per_category
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(
                f"limit_per_category must be a positive integer or null, got {limit!r}"
            )


def limit_per_category(records: Sequence[Record], limit: int | None) -> list[Record]:
    """Keep the first ``limit`` records of each category, in their original order."""
    if limit is None:
        return list(records)
    counts: dict[str, int] = {}
    kept = []
    for record in records:
        if counts.get(record.category, 0) < limit:
            counts[record.category] = counts.get(record.category, 0) + 1
            kept.append(record)
    return kept


def write_samples(
    path: Path, pairs: Sequence[tuple[Record, str]], judgements: Sequence[Judgement]
) -> None:
    """Write one JSON line per sample, replacing ``path`` only once the file is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for (record, response), judgement in zip(pairs, judgements, strict=True):
            row = {
                "id": record.id,
                "category": record.category,
                "kind": record.kind,
                "prompt": record.prompt,
                "response": response,
                "label": judgement.label,
                "score": judgement.score,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


class JudgedBenchmark(Benchmark):
    """Generates a response per eval record of one kind and reports a judged rate."""

    Settings: ClassVar[type] = JudgedBenchmarkSettings
    record_kind: ClassVar[RecordKind]
    metric_prefix: ClassVar[str]

    def is_hit(self, judgement: Judgement) -> bool:
        """Return True when ``judgement`` counts toward the reported rate."""
        raise NotImplementedError

    def run(
        self,
        model_path: Path,
        records: Sequence[Record],
        judge: Judge,
        out_dir: Path,
        ctx: RunContext,
    ) -> dict[str, Metric]:
        """Generate and judge responses, write ``samples.jsonl`` and return the rates.

        The rates are one per category and ``<prefix>/all`` over every sample.
        """
        selected = select(records, split="eval", kind=self.record_kind)
        selected = limit_per_category(selected, self.settings.limit_per_category)
        if not selected:
            raise DrirlError(
                f"benchmark {self.name!r} found no eval records of kind {self.record_kind!r}. "
                "Check the harm categories' data files"
            )
        logger.info(
            "%s: evaluating %s on %d prompts", self.name, model_path, len(selected)
        )

        pairs = generate_with_lm_eval(
            Path(model_path),
            selected,
            Path(out_dir),
            task_name=f"drirl_{self.name}",
            max_new_tokens=self.settings.max_new_tokens,
            batch_size=self.settings.batch_size,
            device=ctx.device,
        )
        prompts = [record.prompt for record, _ in pairs]
        responses = [response for _, response in pairs]
        judgements = judge.judge(prompts, responses)
        if len(judgements) != len(pairs):
            raise DrirlError(
                f"judge {judge.name!r} returned {len(judgements)} judgements for "
                f"{len(pairs)} responses"
            )
        write_samples(Path(out_dir) / "samples.jsonl", pairs, judgements)

        hits_by_category: dict[str, list[bool]] = {}
        for (record, _), judgement in zip(pairs, judgements, strict=True):
            hits_by_category.setdefault(record.category, []).append(
                self.is_hit(judgement)
            )
        metrics = {
            f"{self.metric_prefix}/{category}": rate_metric(hits, seed=ctx.seed)
            for category, hits in hits_by_category.items()
        }
        all_hits = [hit for hits in hits_by_category.values() for hit in hits]
        metrics[f"{self.metric_prefix}/all"] = rate_metric(all_hits, seed=ctx.seed)
        return metrics
