"""The append-only log of a data build, ``build_records.jsonl``, which makes builds resumable.

Each finished demonstration is one JSON line, written with a single ``write`` call, flushed
and fsynced before the next generation starts. A crash can therefore leave at most one
incomplete last line. On open, that line is cut off (the record is generated again) and every
complete line is read back. When an id appears twice (its prompt changed and was generated
again), the later line wins.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO

from drirl.errors import DatasetError

logger = logging.getLogger(__name__)

RECORDS_FILE = "build_records.jsonl"


@dataclass(frozen=True)
class BuildRecord:
    """One generated demonstration with its cost and the refusal check.

    ``tokens`` counts generated tokens, ``seconds`` is the wall time of the generator call,
    and ``refusal_ok`` is True when the final answer after the reasoning is a refusal.
    """

    id: str
    category: str
    split: str
    prompt: str
    demonstration: str
    template: str
    tokens: int
    token_source: str
    seconds: float
    refusal_ok: bool


_FIELDS = tuple(f.name for f in fields(BuildRecord))


def _parse(text: str, path: Path, line_no: int) -> BuildRecord:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"invalid JSON in the build log: {exc.msg}; delete this line to generate "
            "the record again",
            file=path,
            line=line_no,
        ) from None
    if not isinstance(row, dict) or set(row) != set(_FIELDS):
        raise DatasetError(
            f"build log line does not have the fields {', '.join(_FIELDS)}; delete this "
            "line to generate the record again",
            file=path,
            line=line_no,
        )
    return BuildRecord(**row)


def read_build_records(path: Path) -> list[BuildRecord]:
    """Read every complete line of a build log; a missing file has no records."""
    if not path.is_file():
        return []
    records = []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1].decode("utf-8")
    # Split on "\n" only: the JSON strings may contain U+2028, which splitlines splits on.
    for line_no, text in enumerate(complete.split("\n"), start=1):
        if text.strip():
            records.append(_parse(text, path, line_no))
    return records


class BuildLog:
    """The records of ``out_dir/build_records.jsonl`` by id, open for appending."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / RECORDS_FILE
        self._truncate_partial_line()
        self._records = {r.id: r for r in read_build_records(self.path)}
        if self._records:
            logger.info(
                "resuming: %d finished record(s) in %s", len(self._records), self.path
            )
        self._handle: IO[str] | None = None

    def _truncate_partial_line(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logger.warning(
                "%s ends with an incomplete line (%d bytes) from an interrupted build; "
                "removing it",
                self.path,
                len(data) - end,
            )
            with self.path.open("r+b") as handle:
                handle.truncate(end)

    def get(self, record_id: str) -> BuildRecord | None:
        """Return the finished record ``record_id``, or None when it is not in the log."""
        return self._records.get(record_id)

    def append(self, record: BuildRecord) -> None:
        """Append ``record`` as one line and force it to disk before returning."""
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        line = json.dumps(asdict(record), ensure_ascii=False) + "\n"
        self._handle.write(line)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._records[record.id] = record

    def close(self) -> None:
        """Close the file; later appends reopen it."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
