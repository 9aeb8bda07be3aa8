"""The JSONL dataset format of harm categories, validated on load.

One record per line, a JSON object with these fields:

- ``id`` (str, unique within the file)
- ``category`` (str, the harm category's name)
- ``kind``: ``"harmful"`` (should be refused) or ``"benign"`` (a look-alike that should be answered)
- ``prompt`` (str, not empty)
- ``demonstration`` (str, not empty): for a harmful prompt, Chain-of-Draft reasoning then a
  refusal with a safe alternative; for a benign prompt, a short helpful answer (drafted
  too in the built-in data, with a last draft step of ``answer``)
- ``split``: ``"train"`` or ``"eval"``

Every error names the file and the line.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from drirl.components import Record
from drirl.errors import DatasetError

REQUIRED_FIELDS = ("id", "category", "kind", "prompt", "demonstration", "split")
KINDS = ("harmful", "benign")
SPLITS = ("train", "eval")


def _parse_line(text: str, path: Path, line_no: int) -> Record:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"invalid JSON: {exc.msg}", file=path, line=line_no
        ) from None
    except RecursionError:
        raise DatasetError(
            "invalid JSON: nested too deeply to parse", file=path, line=line_no
        ) from None
    if not isinstance(row, dict):
        raise DatasetError("a record must be a JSON object", file=path, line=line_no)
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise DatasetError(
            f"missing field(s) {', '.join(missing)}; a record needs {', '.join(REQUIRED_FIELDS)}",
            file=path,
            line=line_no,
        )
    for name in REQUIRED_FIELDS:
        if not isinstance(row[name], str):
            raise DatasetError(
                f"field {name!r} must be a string, got {type(row[name]).__name__}",
                file=path,
                line=line_no,
            )
    if row["kind"] not in KINDS:
        raise DatasetError(
            f"field 'kind' is {row['kind']!r}; allowed: {', '.join(KINDS)}",
            file=path,
            line=line_no,
        )
    if row["split"] not in SPLITS:
        raise DatasetError(
            f"field 'split' is {row['split']!r}; allowed: {', '.join(SPLITS)}",
            file=path,
            line=line_no,
        )
    for name in ("prompt", "demonstration"):
        if not row[name].strip():
            raise DatasetError(f"field {name!r} is empty", file=path, line=line_no)
    return Record(**{name: row[name] for name in REQUIRED_FIELDS})


def load_records(
    path: str | Path, expected_category: str | None = None
) -> list[Record]:
    """Read a JSONL dataset file; every record must belong to ``expected_category`` if given."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("dataset file not found", file=path)
    records: list[Record] = []
    seen: dict[str, int] = {}
    # Lines are split on b"\n" only: str.splitlines would also split inside a JSON string
    # that contains U+2028 or another Unicode line break, which JSON allows unescaped.
    for line_no, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"line is not valid UTF-8 (byte {exc.start + 1} of the line); save the "
                "file as UTF-8",
                file=path,
                line=line_no,
            ) from None
        if not text.strip():
            continue
        record = _parse_line(text, path, line_no)
        if expected_category is not None and record.category != expected_category:
            raise DatasetError(
                f"record category {record.category!r} does not match the file's category "
                f"{expected_category!r}",
                file=path,
                line=line_no,
            )
        if record.id in seen:
            raise DatasetError(
                f"duplicate id {record.id!r}, first seen on line {seen[record.id]}",
                file=path,
                line=line_no,
            )
        seen[record.id] = line_no
        records.append(record)
    if not records:
        raise DatasetError("dataset file has no records", file=path)
    return records


def select(
    records: Iterable[Record], *, split: str | None = None, kind: str | None = None
) -> list[Record]:
    """Return the records of one split and/or kind, in their original order."""
    return [
        r
        for r in records
        if (split is None or r.split == split) and (kind is None or r.kind == kind)
    ]


def balance(records: Sequence[Record], per_category: int | None = None) -> list[Record]:
    """Keep the same number of records of each (category, kind, split) group.

    The count is ``per_category`` when given, else the smallest group's size. Records are
    kept in file order, so the selection is deterministic.
    """
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.category, r.kind, r.split), []).append(r)
    by_shape: dict[tuple[str, str], list[int]] = {}
    for (category, kind, split), members in groups.items():
        by_shape.setdefault((kind, split), []).append(len(members))
    kept: list[Record] = []
    for key, members in groups.items():
        limit = min(by_shape[(key[1], key[2])])
        if per_category is not None:
            limit = min(limit, per_category)
        kept.extend(members[:limit])
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(kept, key=lambda r: order[id(r)])


def count_by_category(records: Iterable[Record]) -> Counter[tuple[str, str, str]]:
    """Count records per (category, kind, split)."""
    return Counter((r.category, r.kind, r.split) for r in records)


def balanced_by_kind(records: Sequence[Record]) -> list[Record]:
    """Repeat each kind's records in turn until every kind has as many as the largest.

    The records keep their order; the repeats follow them. A single kind is returned as it is.
    """
    by_kind: dict[str, list[Record]] = {}
    for record in records:
        by_kind.setdefault(record.kind, []).append(record)
    largest = max(len(group) for group in by_kind.values())
    balanced = list(records)
    for group in by_kind.values():
        balanced.extend(group[i % len(group)] for i in range(largest - len(group)))
    return balanced


def with_harmful_share(records: Sequence[Record], share: float) -> list[Record]:
    """Repeat harmful or benign records until harmful ones make up ``share`` of the list.

    Only the kind that falls short is repeated, in turn from its first record, so every
    record appears at least once. The records keep their order, and the repeats follow
    them. A list with a single kind is returned as it is.
    """
    harmful = [record for record in records if record.kind == "harmful"]
    benign = [record for record in records if record.kind != "harmful"]
    if not harmful or not benign:
        return list(records)
    if len(harmful) / len(records) < share:
        short, target = harmful, share * len(benign) / (1 - share)
    else:
        short, target = benign, (1 - share) * len(harmful) / share
    # Rounded first, so that float error (0.4 * 6 / 0.6 = 4.000000000000001) adds no record.
    extra = max(0, math.ceil(round(target, 9)) - len(short))
    return list(records) + [short[i % len(short)] for i in range(extra)]
