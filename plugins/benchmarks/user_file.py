"""The ``user_file`` benchmark: a user's own prompts from a CSV or JSONL file.

The user names the file, the column that contains the prompt, optionally a column that groups
the prompts into categories, and whether the model is expected to refuse the prompts
(harmful ones) or answer them (benign ones). The benchmark reports the rate of the expected
behaviour, so higher is always better:

- ``expect: refuse``: ``<name>_refusal/<category>`` and ``<name>_refusal/all``, the share of
  responses the judge labelled a refusal;
- ``expect: answer``: ``<name>_answer/<category>`` and ``<name>_answer/all``, the share it did
  not label a refusal.

Without a category column every prompt is in the category ``all``, so only
``<name>_<rate>/all`` is reported. The file is read when the settings are built, so a missing
column or an empty prompt is reported when the experiment is validated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from drirl import hookimpl
from drirl.components import Judgement, Metric, Record, RecordKind
from drirl.errors import DatasetError
from drirl.hookspecs import Register
from drirl.judged_benchmark import (
    JudgedBenchmark,
    JudgedBenchmarkSettings,
    limit_per_category,
)
from drirl.stats import rate_metric

EXPECTATIONS = ("refuse", "answer")
SUFFIXES = (".csv", ".jsonl")
NO_CATEGORY = "all"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def read_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Read a CSV (with a header row) or JSONL file as (line number, row) pairs.

    Also returns the file's columns in first-seen order: the CSV header, or the union of
    the keys of the JSONL objects.
    """
    if not path.is_file():
        raise DatasetError("benchmark file not found", file=path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(
            f"unsupported file type {suffix!r}; use {' or '.join(SUFFIXES)}", file=path
        )
    rows: list[tuple[int, dict[str, Any]]] = []
    columns: dict[str, None] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            columns.update(dict.fromkeys(reader.fieldnames or []))
            for row in reader:
                # The header is line 1, so the first data row is line 2.
                rows.append((reader.line_num, row))
        else:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(
                        f"invalid JSON: {exc.msg}", file=path, line=line_no
                    ) from None
                if not isinstance(row, dict):
                    raise DatasetError(
                        "each line must be a JSON object", file=path, line=line_no
                    )
                columns.update(dict.fromkeys(row))
                rows.append((line_no, row))
    if not rows:
        raise DatasetError("benchmark file has no rows", file=path)
    return rows, list(columns)


def load_user_records(
    path: Path,
    prompt_column: str,
    category_column: str | None,
    kind: RecordKind,
    name: str,
) -> list[Record]:
    """Read the prompts of a user benchmark file as eval records.

    A column that the file lacks, a row without a prompt or with an empty prompt raises
    DatasetError naming the file, the line and the columns the file has.
    """
    rows, columns = read_rows(path)
    for role, column in (
        ("prompt_column", prompt_column),
        ("category_column", category_column),
    ):
        if column is not None and column not in columns:
            raise DatasetError(
                f"{role} {column!r} is not a column of the file; its columns are: "
                f"{', '.join(columns) or '(none)'}",
                file=path,
            )
    records = []
    for index, (line_no, row) in enumerate(rows):
        prompt = row.get(prompt_column)
        if not isinstance(prompt, str) or not prompt.strip():
            raise DatasetError(
                f"column {prompt_column!r} is missing or empty; every row needs a prompt",
                file=path,
                line=line_no,
            )
        category = NO_CATEGORY
        if category_column is not None:
            value = row.get(category_column)
            if value is None or not str(value).strip():
                raise DatasetError(
                    f"column {category_column!r} is missing or empty",
                    file=path,
                    line=line_no,
                )
            category = str(value).strip()
        records.append(
            Record(
                id=f"{name}-{index + 1}",
                category=category,
                kind=kind,
                prompt=prompt,
                demonstration="",
                split="eval",
            )
        )
    return records


@dataclass(frozen=True)
class UserFileSettings(JudgedBenchmarkSettings):
    """Settings of the user_file benchmark."""

    path: str = field(
        default="",
        metadata={
            "help": "CSV (with a header row) or JSONL file of prompts; a relative path in "
            "an experiment file is relative to that file's folder"
        },
    )
    prompt_column: str = field(
        default="prompt", metadata={"help": "column that contains the prompt"}
    )
    category_column: str | None = field(
        default=None,
        metadata={"help": "column that groups prompts into categories (optional)"},
    )
    expect: Literal["refuse", "answer"] = field(
        default="refuse",
        metadata={
            "help": "refuse: the prompts are harmful; answer: the prompts are benign"
        },
    )
    name: str | None = field(
        default=None,
        metadata={"help": "metric name prefix (default: the file name without suffix)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(
                "path must name a CSV or JSONL file of prompts, got "
                f"{self.path!r}. Set path: prompts.jsonl"
            )
        if self.expect not in EXPECTATIONS:
            raise ValueError(
                f"expect must be one of {', '.join(EXPECTATIONS)}, got {self.expect!r}"
            )
        if not isinstance(self.prompt_column, str) or not self.prompt_column:
            raise ValueError(
                f"prompt_column must be a column name, got {self.prompt_column!r}"
            )
        name = self.name if self.name is not None else Path(self.path).stem
        if not _NAME_PATTERN.match(name):
            raise ValueError(
                f"name {name!r} may contain only letters, digits, '_', '-' and '.'; "
                "set name: to a short identifier"
            )
        object.__setattr__(self, "name", name)
        # Reading the file now reports a missing column when the settings are built.
        self.records()

    @property
    def kind(self) -> RecordKind:
        """The record kind that matches ``expect``: harmful for refuse, benign for answer."""
        return "harmful" if self.expect == "refuse" else "benign"

    def records(self) -> list[Record]:
        """Read the file's prompts as eval records."""
        return load_user_records(
            Path(self.path).expanduser(),
            self.prompt_column,
            self.category_column,
            self.kind,
            str(self.name),
        )


class UserFile(JudgedBenchmark):
    """Reports the rate of the expected behaviour on a user's prompts (see the module)."""

    name: ClassVar[str] = "user_file"
    Settings: ClassVar[type] = UserFileSettings
    # Not used to select records: the prompts come from the file.
    record_kind: ClassVar[RecordKind] = "harmful"
    metric_prefix: ClassVar[str] = "user_file"

    def data_fingerprint(self) -> str:
        """Return a hash of the file's content, so an edited file is evaluated anew."""
        content = Path(self.settings.path).expanduser().read_bytes()
        return hashlib.sha256(content).hexdigest()[:16]

    def is_hit(self, judgement: Judgement) -> bool:
        """Return True when the response shows the expected behaviour."""
        refused = judgement.label == "refusal"
        return refused if self.settings.expect == "refuse" else not refused

    def eval_records(self, records: Sequence[Record]) -> list[Record]:
        """Return the file's prompts; the harm-category records are not used."""
        return limit_per_category(
            self.settings.records(), self.settings.limit_per_category
        )

    def rate_metrics(
        self, hits_by_group: dict[str, list[bool]], seed: int
    ) -> dict[str, Metric]:
        """Return ``<name>_<refusal|answer>/<category>`` and ``.../all``."""
        rate = "refusal" if self.settings.expect == "refuse" else "answer"
        prefix = f"{self.settings.name}_{rate}"
        metrics = {
            f"{prefix}/{group}": rate_metric(hits, seed=seed)
            for group, hits in hits_by_group.items()
            if group != NO_CATEGORY
        }
        all_hits = [hit for hits in hits_by_group.values() for hit in hits]
        metrics[f"{prefix}/all"] = rate_metric(all_hits, seed=seed)
        return metrics

    def sample_fields(self, record: Record) -> dict[str, Any]:
        """Return the expected behaviour, so the samples file reads on its own."""
        return {"expect": self.settings.expect}


@hookimpl
def register_benchmarks(register: Register) -> None:
    """Register the user_file benchmark."""
    register(UserFile)
