"""Harmful prompts for `drirl data build`: read from harm categories and user files.

A source is ``package`` (the harmful records of the selected harm categories, as their
plugins ship them) or a path to a JSONL or CSV file. A user file needs the fields
``category`` and ``prompt``. It may also carry ``id``, ``kind``, ``split`` and
``demonstration``, so a file in the dataset schema (see ``drirl.dataset``) is a valid source.
Rows of kind ``benign`` are skipped, and any existing demonstration is replaced by the new
one. Every error names the file and the line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl.components import HarmCategory
from drirl.dataset import KINDS, SPLITS
from drirl.errors import DatasetError, closest_match

PACKAGE_SOURCE = "package"
FILE_FIELDS = ("id", "category", "kind", "prompt", "demonstration", "split")
REQUIRED_FILE_FIELDS = ("category", "prompt")
# A prompt longer than this is almost always a pasted document, not a request.
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class SourcePrompt:
    """A harmful prompt to write a demonstration for, and where it was read."""

    id: str
    category: str
    prompt: str
    split: str
    source: str
    line: int | None = None

    @property
    def location(self) -> str:
        """Return ``file:line`` for a user file, or ``package`` with the record id."""
        if self.line is None:
            return f"{self.source} ({self.id})"
        return f"{self.source}:{self.line}"


@dataclass
class SourceSummary:
    """Counts of what was read per source, the skipped rows and the dropped duplicates."""

    read: dict[str, int] = field(default_factory=dict)
    skipped_benign: int = 0
    skipped_other_category: int = 0
    duplicates: list[tuple[SourcePrompt, SourcePrompt]] = field(default_factory=list)


def normalize_prompt(text: str) -> str:
    """Return the form of a prompt used to find duplicates.

    The text is NFKC-normalised and case-folded, curly quotes become straight ones, runs of
    whitespace collapse to one space, and trailing spaces and sentence punctuation go.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return " ".join(text.split()).rstrip(" .!?")


def prompt_id(category: str, prompt: str) -> str:
    """Return a stable id for a prompt that has none: the category and a prompt hash."""
    digest = hashlib.sha1(normalize_prompt(prompt).encode("utf-8")).hexdigest()
    return f"{category}-{digest[:12]}"


def read_package_prompts(categories: Sequence[HarmCategory]) -> list[SourcePrompt]:
    """Return the harmful records of ``categories`` as prompts, in file order."""
    prompts: list[SourcePrompt] = []
    for category in categories:
        for record in category.load_records():
            if record.kind != "harmful":
                continue
            prompts.append(
                SourcePrompt(
                    record.id,
                    record.category,
                    record.prompt,
                    record.split,
                    PACKAGE_SOURCE,
                )
            )
    return prompts


def _rows(path: Path) -> Iterable[tuple[int, Mapping[str, Any]]]:
    """Yield (line number, row) from a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        # utf-8-sig also reads files that start with a byte order mark, as Excel writes.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise DatasetError("CSV file has no header row", file=path, line=1)
            for row in reader:
                if None in row:
                    raise DatasetError(
                        "row has more values than the header has columns",
                        file=path,
                        line=reader.line_num,
                    )
                yield reader.line_num, row
        return
    with path.open(encoding="utf-8-sig") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
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
                raise DatasetError(
                    "a row must be a JSON object", file=path, line=line_no
                )
            yield line_no, row


def _field(row: Mapping[str, Any], name: str, path: Path, line: int) -> str | None:
    value = row.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DatasetError(
            f"field {name!r} must be a string, got {type(value).__name__}",
            file=path,
            line=line,
        )
    return value


def _check_row(
    row: Mapping[str, Any], path: Path, line: int, known: Sequence[str]
) -> None:
    unknown = [name for name in row if name not in FILE_FIELDS]
    if unknown:
        raise DatasetError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(FILE_FIELDS)}",
            file=path,
            line=line,
        )

    missing = [n for n in REQUIRED_FILE_FIELDS if _field(row, n, path, line) is None]
    if missing:
        raise DatasetError(
            f"missing field(s) {', '.join(missing)}; a row needs "
            f"{', '.join(REQUIRED_FILE_FIELDS)}",
            file=path,
            line=line,
        )

    category = row["category"]
    if category not in known:
        suggestion = closest_match(category, known)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        raise DatasetError(
            f"unknown harm category {category!r}.{hint} Known categories: "
            f"{', '.join(sorted(known))}",
            file=path,
            line=line,
        )

    kind = _field(row, "kind", path, line) or "harmful"
    if kind not in KINDS:
        raise DatasetError(
            f"field 'kind' is {kind!r}; allowed: {', '.join(KINDS)}",
            file=path,
            line=line,
        )
    split = _field(row, "split", path, line) or "train"
    if split not in SPLITS:
        raise DatasetError(
            f"field 'split' is {split!r}; allowed: {', '.join(SPLITS)}",
            file=path,
            line=line,
        )

    prompt = row["prompt"]
    if not prompt.strip():
        raise DatasetError("field 'prompt' is empty", file=path, line=line)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DatasetError(
            f"field 'prompt' has {len(prompt)} characters; the maximum is "
            f"{MAX_PROMPT_CHARS}. Shorten the prompt",
            file=path,
            line=line,
        )


def read_prompt_file(
    path: str | Path,
    selected: Sequence[str],
    known: Sequence[str],
    summary: SourceSummary,
) -> list[SourcePrompt]:
    """Read the harmful prompts of the ``selected`` categories from a JSONL or CSV file.

    Every row is validated against the ``known`` (registered) categories, so a misspelled
    category fails even when it is not selected. Benign rows and rows of registered but
    unselected categories are counted in ``summary`` and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError("source file not found", file=path)
    prompts: list[SourcePrompt] = []
    seen: dict[str, int] = {}
    try:
        for line, row in _rows(path):
            _check_row(row, path, line, known)
            if (_field(row, "kind", path, line) or "harmful") != "harmful":
                summary.skipped_benign += 1
                continue
            category = row["category"]
            if category not in selected:
                summary.skipped_other_category += 1
                continue
            record_id = _field(row, "id", path, line)
            if record_id is None:
                # A derived id repeats only for a repeated prompt, which deduplicate drops.
                record_id = prompt_id(category, row["prompt"])
            elif record_id in seen:
                raise DatasetError(
                    f"duplicate id {record_id!r}, first seen on line {seen[record_id]}",
                    file=path,
                    line=line,
                )
            else:
                seen[record_id] = line
            split = _field(row, "split", path, line) or "train"
            prompts.append(
                SourcePrompt(record_id, category, row["prompt"], split, str(path), line)
            )
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"file is not valid UTF-8 (byte offset {exc.start})", file=path
        ) from None
    return prompts


def deduplicate(
    prompts: Sequence[SourcePrompt], summary: SourceSummary
) -> list[SourcePrompt]:
    """Keep the first of each normalised prompt; record the others in ``summary``.

    Two prompts with the same id but different text are an error, because the id keys the
    resumable build records.
    """
    kept: list[SourcePrompt] = []
    by_text: dict[str, SourcePrompt] = {}
    by_id: dict[str, SourcePrompt] = {}
    for prompt in prompts:
        key = normalize_prompt(prompt.prompt)
        if key in by_text:
            summary.duplicates.append((prompt, by_text[key]))
            continue
        if prompt.id in by_id:
            first = by_id[prompt.id]
            raise DatasetError(
                f"id {prompt.id!r} is already used by a different prompt at "
                f"{first.location}; give the row a unique id",
                file=prompt.source,
                line=prompt.line,
            )
        by_text[key] = prompt
        by_id[prompt.id] = prompt
        kept.append(prompt)
    return kept


def collect_prompts(
    sources: Sequence[str],
    categories: Sequence[HarmCategory],
    known: Sequence[str],
) -> tuple[list[SourcePrompt], SourceSummary]:
    """Read every source in order and drop duplicate prompts across and within them."""
    summary = SourceSummary()
    selected = [c.name for c in categories]
    gathered: list[SourcePrompt] = []
    for source in sources:
        if source == PACKAGE_SOURCE:
            prompts = read_package_prompts(categories)
        else:
            prompts = read_prompt_file(source, selected, known, summary)
        summary.read[source] = summary.read.get(source, 0) + len(prompts)
        gathered.extend(prompts)
    return deduplicate(gathered, summary), summary
