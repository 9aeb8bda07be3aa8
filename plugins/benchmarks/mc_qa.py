"""The ``mc_qa`` benchmark: general-knowledge multiple-choice questions scored by likelihood.

The questions (``data/mc_qa.jsonl``, four choices each) were written for drirl. lm-eval
scores each choice by its log-likelihood as a continuation of ``Question: ...\\nAnswer:``
without the chat template, and the model's answer is the choice with the highest
log-likelihood. Chance accuracy is 0.25. A drop after safety training shows lost
knowledge, which refusal rates alone do not reveal.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from drirl import hookimpl
from drirl.components import Benchmark, Judge, Metric, Record, RunContext
from drirl.errors import DrirlError
from drirl.hookspecs import Register
from drirl.lm_eval_runner import score_multiple_choice, write_jsonl
from drirl.stats import rate_metric

logger = logging.getLogger(__name__)


def questions_path() -> Path:
    """Return the path of the built-in multiple-choice questions file."""
    return Path(str(resources.files("drirl.plugins.benchmarks") / "data/mc_qa.jsonl"))


@dataclass(frozen=True)
class McQaSettings:
    """Settings of the mc_qa benchmark."""

    batch_size: int = field(
        default=16, metadata={"help": "log-likelihood requests per model batch"}
    )
    limit: int | None = field(
        default=None,
        metadata={"help": "score only the first N questions (all if null)"},
    )

    def __post_init__(self) -> None:
        value = self.batch_size
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"batch_size must be a positive integer, got {value!r}")
        limit = self.limit
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(f"limit must be a positive integer or null, got {limit!r}")


class McQa(Benchmark):
    """Reports ``mc_qa/accuracy``: the share of questions whose best choice is right."""

    name: ClassVar[str] = "mc_qa"
    Settings: ClassVar[type] = McQaSettings

    def data_fingerprint(self) -> str:
        """Return a hash of the questions file, so edited questions are evaluated anew."""
        return hashlib.sha256(questions_path().read_bytes()).hexdigest()[:16]

    def run(
        self,
        model_path: Path,
        records: Sequence[Record],
        judge: Judge,
        out_dir: Path,
        ctx: RunContext,
    ) -> dict[str, Metric]:
        """Score the questions, write ``samples.jsonl`` and return the accuracy.

        ``records`` and ``judge`` are not used: the questions come from the package and
        scoring needs no judge.
        """
        path = questions_path()
        logger.info("%s: scoring %s on %s", self.name, model_path, path)
        scores = score_multiple_choice(
            Path(model_path),
            path,
            Path(out_dir),
            task_name="drirl_mc_qa",
            batch_size=self.settings.batch_size,
            device=ctx.device,
            limit=self.settings.limit,
            trust_remote_code=ctx.trust_remote_code,
        )
        if not scores:
            raise DrirlError(f"lm-eval scored no questions from {path}")

        rows = []
        for score in scores:
            doc = score.doc
            best = max(
                range(len(score.loglikelihoods)), key=score.loglikelihoods.__getitem__
            )
            rows.append(
                {
                    "id": doc["id"],
                    "question": doc["question"],
                    "choices": doc["choices"],
                    "answer": doc["answer"],
                    "predicted": best,
                    "loglikelihoods": score.loglikelihoods,
                    "correct": score.accuracy == 1.0,
                }
            )
        write_jsonl(rows, Path(out_dir) / "samples.jsonl")
        accuracy = rate_metric([score.accuracy for score in scores], seed=ctx.seed)
        return {"mc_qa/accuracy": accuracy}


def read_questions(path: Path) -> list[dict[str, Any]]:
    """Read the questions file (one JSON object per line)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the mc_qa benchmark."""
    register(McQa)
