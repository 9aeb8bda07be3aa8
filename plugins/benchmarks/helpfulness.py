"""The ``helpfulness`` benchmark: benign instructions the model should simply answer.

The instructions (``data/helpfulness.jsonl``: writing, coding, math and advice, each with a
short reference answer) were written for drirl. Two metrics:

- ``helpfulness/answer_rate``: the share of responses the configured judge did not label a
  refusal. Safety training that over-refuses lowers it.
- ``helpfulness/quality``: the mean per-instruction score, where a refused or empty response
  scores 0 and any other response scores the cosine similarity of its text-encoder embedding
  (the run's text encoder, by default the embedded all-MiniLM-L6-v2) to the reference
  answer, clipped to [0, 1]. It rewards answers on topic with the reference. It does not
  check that an answer is correct.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import Judgement, Metric, Record, RecordKind, RunContext
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.judged_benchmark import (
    JUDGE_ERROR_LABEL,
    JudgedBenchmark,
    JudgedBenchmarkSettings,
    limit_per_category,
)
from drirl.stats import rate_metric


def instructions_path() -> Path:
    """Return the path of the built-in helpfulness instructions file."""
    package = resources.files("drirl.plugins.benchmarks")
    return Path(str(package / "data/helpfulness.jsonl"))


def load_instructions(path: Path) -> list[Record]:
    """Read the instructions as benign eval records whose demonstration is the reference."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [
                key
                for key in ("id", "category", "prompt", "reference")
                if key not in row
            ]
            if missing:
                raise DrirlError(f"{path}:{line_no}: missing fields {missing}")
            records.append(
                Record(
                    id=row["id"],
                    category=row["category"],
                    kind="benign",
                    prompt=row["prompt"],
                    demonstration=row["reference"],
                    split="eval",
                )
            )
    return records


@dataclass(frozen=True)
class HelpfulnessSettings(JudgedBenchmarkSettings):
    """Settings of the helpfulness benchmark; the limit applies per instruction category."""


class Helpfulness(JudgedBenchmark):
    """Reports ``helpfulness/answer_rate`` and ``helpfulness/quality`` (see the module)."""

    name: ClassVar[str] = "helpfulness"
    Settings: ClassVar[type] = HelpfulnessSettings
    record_kind: ClassVar[RecordKind] = "benign"
    metric_prefix: ClassVar[str] = "helpfulness"

    def data_fingerprint(self) -> str:
        """Return a hash of the instructions file, so edited ones are evaluated anew."""
        return hashlib.sha256(instructions_path().read_bytes()).hexdigest()[:16]

    def is_hit(self, judgement: Judgement) -> bool:
        """Return True when the judge did not label the response a refusal."""
        return judgement.label != "refusal"

    def eval_records(self, records: Sequence[Record]) -> list[Record]:
        """Return the packaged instructions; the harm-category records are not used."""
        instructions = load_instructions(instructions_path())
        return limit_per_category(instructions, self.settings.limit_per_category)

    def rate_metrics(
        self, hits_by_group: dict[str, list[bool]], seed: int
    ) -> dict[str, Metric]:
        """Return ``helpfulness/answer_rate`` over every instruction."""
        hits = [hit for group in hits_by_group.values() for hit in group]
        return {"helpfulness/answer_rate": rate_metric(hits, seed=seed)}

    def extra_metrics(
        self,
        pairs: Sequence[tuple[Record, str]],
        judgements: Sequence[Judgement],
        ctx: RunContext,
    ) -> tuple[dict[str, Metric], list[dict[str, Any]]]:
        """Return ``helpfulness/quality`` and each response's similarity and quality."""
        from drirl.text_encoder import load_text_encoder

        encoder = load_text_encoder(ctx.text_encoder)
        responses = [response for _, response in pairs]
        references = [record.demonstration for record, _ in pairs]
        # Rows are unit length, so the row-wise dot product is the cosine similarity.
        similarity = (encoder.encode(responses) * encoder.encode(references)).sum(dim=1)
        qualities = []
        fields = []
        for (record, response), judgement, value in zip(
            pairs, judgements, similarity.tolist(), strict=True
        ):
            row: dict[str, Any] = {
                "reference": record.demonstration,
                "similarity": round(value, 4),
            }
            # A response the judge failed to rate gets no quality, as it gets no rate.
            if judgement.label != JUDGE_ERROR_LABEL:
                answered = bool(response.strip()) and self.is_hit(judgement)
                quality = min(max(value, 0.0), 1.0) if answered else 0.0
                qualities.append(quality)
                row["quality"] = round(quality, 4)
            fields.append(row)
        metrics = {"helpfulness/quality": rate_metric(qualities, seed=ctx.seed)}
        return metrics, fields


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the helpfulness benchmark."""
    register(Helpfulness)
