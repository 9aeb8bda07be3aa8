"""A benchmark that generates responses through lm-eval and rates them with a judge.

Subclasses choose which records they generate for (by default the eval-split records of one
kind), how records are grouped in the report (by default by category), the metric prefix,
and which judge labels count as a hit. Every benchmark writes ``samples.jsonl`` to its output
folder, one line per response with the prompt, the response, the judge's label and score and
the record's group fields. It reports a rate per group plus ``<prefix>/all``, each with its
sample count and a bootstrap confidence interval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
from drirl.generation_cache import cached_generate
from drirl.lm_eval_runner import (
    backend_problem,
    backend_args_problem,
    generate_with_lm_eval,
    write_jsonl,
)
from drirl.stats import rate_metric

logger = logging.getLogger(__name__)

# The label of a response the judge failed to rate.
JUDGE_ERROR_LABEL = "error"


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
    backend: str = field(
        default="hf",
        metadata={
            "help": "lm-eval model type: 'hf' (transformers) or 'vllm' (needs vllm)"
        },
    )
    backend_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "further keyword arguments for lm-eval's model class"},
    )

    def __post_init__(self) -> None:
        problem = backend_problem(self.backend) or backend_args_problem(
            self.backend_args
        )
        if problem is not None:
            raise ValueError(problem)
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
    path: Path,
    pairs: Sequence[tuple[Record, str]],
    judgements: Sequence[Judgement],
    extra: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Write one JSON line per sample, replacing ``path`` only once the file is complete.

    ``extra`` contains more fields per sample (a jailbreak template, a quality score), in the
    order of ``pairs``.
    """
    extras = extra if extra is not None else [{}] * len(pairs)
    rows = []
    for (record, response), judgement, fields in zip(
        pairs, judgements, extras, strict=True
    ):
        row = {
            "id": record.id,
            "category": record.category,
            "kind": record.kind,
            "prompt": record.prompt,
            "response": response,
            "label": judgement.label,
            "score": judgement.score,
        }
        error = getattr(judgement, "error", None)
        if error is not None:
            row["judge_error"] = error
        row.update(fields)
        rows.append(row)
    write_jsonl(rows, path)


class JudgedBenchmark(Benchmark):
    """Generates a response per eval record of one kind and reports a judged rate."""

    Settings: ClassVar[type] = JudgedBenchmarkSettings
    record_kind: ClassVar[RecordKind]
    metric_prefix: ClassVar[str]

    def is_hit(self, judgement: Judgement) -> bool:
        """Return True when ``judgement`` counts toward the reported rate."""
        raise NotImplementedError

    def eval_records(self, records: Sequence[Record]) -> list[Record]:
        """Return the records to generate for: the eval split of ``record_kind``."""
        selected = select(records, split="eval", kind=self.record_kind)
        return limit_per_category(selected, self.settings.limit_per_category)

    def group_of(self, record: Record) -> str:
        """Return the group a record is reported under: its category."""
        return record.category

    def sample_fields(self, record: Record) -> dict[str, Any]:
        """Return more fields for the record's line in ``samples.jsonl``."""
        return {}

    def extra_metrics(
        self,
        pairs: Sequence[tuple[Record, str]],
        judgements: Sequence[Judgement],
        ctx: RunContext,
    ) -> tuple[dict[str, Metric], list[dict[str, Any]]]:
        """Return metrics beyond the hit rates and per-sample fields that explain them."""
        return {}, [{} for _ in pairs]

    def rate_metrics(
        self, hits_by_group: dict[str, list[bool]], seed: int
    ) -> dict[str, Metric]:
        """Return ``<prefix>/<group>`` for each group and ``<prefix>/all`` over all samples."""
        metrics = {
            f"{self.metric_prefix}/{group}": rate_metric(hits, seed=seed)
            for group, hits in hits_by_group.items()
        }
        all_hits = [hit for hits in hits_by_group.values() for hit in hits]
        metrics[f"{self.metric_prefix}/all"] = rate_metric(all_hits, seed=seed)
        return metrics

    def run(
        self,
        model_path: Path,
        records: Sequence[Record],
        judge: Judge,
        out_dir: Path,
        ctx: RunContext,
    ) -> dict[str, Metric]:
        """Generate and judge responses, write ``samples.jsonl`` and return the rates.

        The rates are one per group and ``<prefix>/all`` over every sample, plus whatever
        ``extra_metrics`` adds.
        """
        selected = self.eval_records(records)
        if not selected:
            raise DrirlError(
                f"benchmark {self.name!r} found no eval records of kind {self.record_kind!r}. "
                "Check the harm categories' data files"
            )
        logger.info(
            "%s: evaluating %s on %d prompts", self.name, model_path, len(selected)
        )

        generation = {
            "task_name": f"drirl_{self.name}",
            "max_new_tokens": self.settings.max_new_tokens,
            "batch_size": self.settings.batch_size,
            "device": ctx.device,
            "backend": self.settings.backend,
            "backend_args": self.settings.backend_args,
        }
        pairs = cached_generate(
            ctx.generation_cache,
            Path(model_path),
            selected,
            generation,
            lambda: generate_with_lm_eval(
                Path(model_path),
                selected,
                Path(out_dir),
                trust_remote_code=ctx.trust_remote_code,
                **generation,
            ),
        )
        prompts = [record.prompt for record, _ in pairs]
        responses = [response for _, response in pairs]
        judgements = judge.judge(prompts, responses)
        if len(judgements) != len(pairs):
            raise DrirlError(
                f"judge {judge.name!r} returned {len(judgements)} judgements for "
                f"{len(pairs)} responses"
            )

        # A response the judge failed to rate (label "error") counts in no rate, so a
        # rate's n is the number of rated responses.
        hits_by_group: dict[str, list[bool]] = {}
        unrated = 0
        for (record, _), judgement in zip(pairs, judgements, strict=True):
            if judgement.label == JUDGE_ERROR_LABEL:
                unrated += 1
                continue
            hits_by_group.setdefault(self.group_of(record), []).append(
                self.is_hit(judgement)
            )
        if unrated:
            logger.warning(
                "%s: judge %r failed to rate %d of %d responses; they are left out of "
                "the rates (see judge_error in samples.jsonl)",
                self.name,
                judge.name,
                unrated,
                len(pairs),
            )
        if not hits_by_group:
            write_samples(Path(out_dir) / "samples.jsonl", pairs, judgements)
            raise DrirlError(
                f"judge {judge.name!r} failed to rate every response of benchmark "
                f"{self.name!r}; see {Path(out_dir) / 'samples.jsonl'}"
            )
        metrics = self.rate_metrics(hits_by_group, ctx.seed)
        extra_metrics, extra_fields = self.extra_metrics(pairs, judgements, ctx)
        metrics.update(extra_metrics)

        fields = [
            {"judge": judge.name, **self.sample_fields(record), **more}
            for (record, _), more in zip(pairs, extra_fields, strict=True)
        ]
        write_samples(Path(out_dir) / "samples.jsonl", pairs, judgements, fields)
        return metrics
