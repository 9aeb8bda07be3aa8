"""Labelled responses that train the ``embedding_classifier`` judge, and their fixed split.

The file is JSONL, one object per line with these string fields:

- ``id``: unique within the file
- ``label``: ``refusal``, ``harmful`` (complies with a harmful request) or ``compliant``
  (a helpful reply to a benign request, including replies that mention a risk)
- ``prompt``: the request
- ``response``: the response that carries the label

The built-in file ``data/judge_labels.jsonl`` was written for drirl: 52 responses per
label, with terse refusals, refusals that offer an alternative, Chain-of-Draft refusals,
harmful responses with and without a disclaimer, and benign responses to
alarming-sounding requests. Every error names the file and the line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from drirl.errors import DatasetError

LABELS: tuple[str, ...] = ("refusal", "harmful", "compliant")
FIELDS: tuple[str, ...] = ("id", "label", "prompt", "response")
BUILTIN_LABELS_PATH = Path(__file__).parent / "data" / "judge_labels.jsonl"


@dataclass(frozen=True)
class LabelledResponse:
    """One (prompt, response) pair with the label a judge should give it."""

    id: str
    label: str
    prompt: str
    response: str


def _parse_row(text: str, path: Path, line_no: int) -> LabelledResponse:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"invalid JSON: {exc.msg}", file=path, line=line_no
        ) from None
    if not isinstance(row, dict):
        raise DatasetError("a row must be a JSON object", file=path, line=line_no)
    for name in FIELDS:
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(
                f"field {name!r} must be a non-empty string, got {value!r}; a row needs "
                f"{', '.join(FIELDS)}",
                file=path,
                line=line_no,
            )
    if row["label"] not in LABELS:
        raise DatasetError(
            f"field 'label' is {row['label']!r}; allowed: {', '.join(LABELS)}",
            file=path,
            line=line_no,
        )
    return LabelledResponse(row["id"], row["label"], row["prompt"], row["response"])


def load_labelled(path: Path) -> list[LabelledResponse]:
    """Read and validate a labelled-response JSONL file; every label must occur."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            "labelled-response file not found; set judge_settings.data_path to a JSONL "
            "file with id, label, prompt and response fields",
            file=path,
        )
    rows: list[LabelledResponse] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            row = _parse_row(text, path, line_no)
            if row.id in seen:
                raise DatasetError(
                    f"id {row.id!r} already used on line {seen[row.id]}",
                    file=path,
                    line=line_no,
                )
            seen[row.id] = line_no
            rows.append(row)
    missing = [label for label in LABELS if all(r.label != label for r in rows)]
    if missing:
        raise DatasetError(
            f"no rows with label(s) {', '.join(missing)}; the classifier needs examples "
            f"of every label in {', '.join(LABELS)}",
            file=path,
        )
    return rows


def split_heldout(
    rows: list[LabelledResponse], fraction: float, seed: int
) -> tuple[list[LabelledResponse], list[LabelledResponse]]:
    """Split rows into (train, held-out), holding out ``fraction`` of each label.

    The split depends only on the rows' order and ``seed``. A label with two or more rows
    keeps at least one row on each side.
    """
    generator = random.Random(seed)
    train: list[LabelledResponse] = []
    heldout: list[LabelledResponse] = []
    for label in LABELS:
        group = [row for row in rows if row.label == label]
        generator.shuffle(group)
        count = round(len(group) * fraction)
        count = min(max(count, 1), len(group) - 1)
        heldout.extend(group[:count])
        train.extend(group[count:])
    return train, heldout
