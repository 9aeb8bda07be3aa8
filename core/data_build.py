"""`drirl data build`: write a demonstration for each harmful prompt and balance the result.

Life cycle of one build into ``out_dir``:

1. setup: read the prompts of the selected categories from every source and drop duplicates.
   Then check that ``build.json`` (template, generator and judge) matches any earlier build
   in the same folder, so a resumed build never mixes two configurations.
2. run: per category, take the candidate prompts in source order and generate each
   demonstration that ``build_records.jsonl`` does not already contain. Each finished record
   is appended to that file and flushed to disk, so an interrupted build resumes where it
   stopped. The refusal judge checks that the final answer, after the reasoning, is a refusal.
3. save: keep the same number of refusing demonstrations in every category, write
   ``dataset.jsonl`` atomically in the dataset schema and ``report.md`` with the shortfalls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from drirl.atomic import write_json_atomic, write_text_atomic
from drirl.components import Generator, HarmCategory, Judge
from drirl.data_build_log import BuildLog, BuildRecord
from drirl.data_report import MANIFEST_FILE, build_report
from drirl.data_sources import (
    PACKAGE_SOURCE,
    SourcePrompt,
    SourceSummary,
    collect_prompts,
)
from drirl.data_templates import DemonstrationTemplate, final_answer, get_template
from drirl.dataset import REQUIRED_FIELDS, load_records
from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

DATASET_FILE = "dataset.jsonl"
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class BuildSettings:
    """Settings of one build: categories, sources, template, count per category, folder."""

    categories: tuple[str, ...]
    out_dir: Path
    template: str = field(default="cod", metadata={"help": "cod or cot"})
    sources: tuple[str, ...] = field(
        default=(PACKAGE_SOURCE,),
        metadata={"help": "`package` and/or paths of JSONL or CSV prompt files"},
    )
    per_category: int | None = field(
        default=None,
        metadata={
            "help": "demonstrations per category; default: the smallest category's "
            "number of prompts"
        },
    )
    top_up: bool = field(
        default=False,
        metadata={
            "help": "when a demonstration does not end in a refusal, generate one for the "
            "category's next prompt, until per_category refusals or no prompts remain"
        },
    )
    judge: str = field(
        default="refusal_phrases", metadata={"help": "judge that checks the refusal"}
    )

    def __post_init__(self) -> None:
        categories = tuple(self.categories)
        if not categories:
            raise DrirlError("no categories given; name at least one harm category")
        if len(set(categories)) != len(categories):
            raise DrirlError(f"categories are listed twice: {', '.join(categories)}")
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if not self.sources:
            raise DrirlError(f"no sources given; use {PACKAGE_SOURCE!r} or a file path")
        get_template(self.template)
        if self.per_category is not None and (
            isinstance(self.per_category, bool)
            or not isinstance(self.per_category, int)
            or self.per_category < 1
        ):
            raise DrirlError(
                f"per_category must be a positive integer, got {self.per_category!r}"
            )


@dataclass
class CategoryOutcome:
    """The counts of one category after a build."""

    name: str
    candidates: int = 0
    generated: int = 0
    reused: int = 0
    refusals: int = 0
    kept: int = 0
    needed: int = 0

    @property
    def short(self) -> bool:
        """Return True when the category has fewer refusing demonstrations than needed."""
        return self.refusals < self.needed


@dataclass
class BuildSummary:
    """The outcome of a build, written to summary.json and report.md."""

    out_dir: Path
    template: str
    generator: str
    needed: int
    per_category: int
    categories: list[CategoryOutcome]
    sources: SourceSummary
    records: list[BuildRecord]

    @property
    def short_categories(self) -> list[CategoryOutcome]:
        """Return the categories that could not supply ``needed`` refusals."""
        return [c for c in self.categories if c.short]

    def to_json(self) -> dict[str, Any]:
        """Return the summary as plain JSON values."""
        return {
            "template": self.template,
            "generator": self.generator,
            "needed": self.needed,
            "per_category": self.per_category,
            "categories": [vars(c) for c in self.categories],
            "short": [c.name for c in self.short_categories],
            "sources": self.sources.read,
            "duplicates_dropped": len(self.sources.duplicates),
            "skipped_benign": self.sources.skipped_benign,
            "skipped_other_category": self.sources.skipped_other_category,
        }


def manifest(
    template: DemonstrationTemplate, generator: Generator, judge_name: str
) -> dict[str, Any]:
    """Return what decides a build's output; a resumed build must match it exactly."""
    return {
        "template": template.name,
        "template_fingerprint": template.fingerprint(),
        "generator": type(generator).name,
        "generator_settings": generator.describe(),
        "judge": judge_name,
    }


def _check_manifest(out_dir: Path, expected: dict[str, Any]) -> None:
    path = out_dir / MANIFEST_FILE
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if json.loads(json.dumps(expected, default=str)) != found:
            changed = sorted(k for k in expected if found.get(k) != expected.get(k))
            raise DrirlError(
                f"{out_dir} contains a build made with different {', '.join(changed)} "
                f"(see {path}); use a new --out folder, or delete the folder to rebuild"
            )
    write_json_atomic(path, expected)


def _generate(
    prompt: SourcePrompt,
    template: DemonstrationTemplate,
    generator: Generator,
    judge: Judge,
    description: str,
) -> BuildRecord:
    generation = generator.generate(template.messages(prompt.prompt, description))
    answer = final_answer(generation.text)
    refusal_ok = bool(answer) and (
        judge.judge([prompt.prompt], [answer])[0].label == "refusal"
    )
    return BuildRecord(
        id=prompt.id,
        category=prompt.category,
        split=prompt.split,
        prompt=prompt.prompt,
        demonstration=generation.text,
        template=template.name,
        tokens=generation.tokens,
        token_source=generation.token_source,
        seconds=round(generation.seconds, 4),
        refusal_ok=refusal_ok,
    )


def _needed(settings: BuildSettings, by_category: dict[str, list[SourcePrompt]]) -> int:
    if settings.per_category is not None:
        return settings.per_category
    empty = [name for name, prompts in by_category.items() if not prompts]
    if empty:
        raise DrirlError(
            f"no harmful prompts for {', '.join(empty)} in the sources "
            f"{', '.join(settings.sources)}; add a prompt file for them, drop them from "
            "--categories, or set --per-category to build the others and report these "
            "as short"
        )
    return min(len(prompts) for prompts in by_category.values())


@dataclass
class _Run:
    """State shared by the generation loops of all categories."""

    log: BuildLog
    template: DemonstrationTemplate
    generator: Generator
    judge: Judge
    progress: Any


def _build_category(
    category: HarmCategory,
    prompts: Sequence[SourcePrompt],
    outcome: CategoryOutcome,
    top_up: bool,
    run: _Run,
) -> list[BuildRecord]:
    """Return the category's records, generating those the log lacks."""
    records: list[BuildRecord] = []
    for prompt in prompts:
        done = outcome.refusals if top_up else len(records)
        if done >= outcome.needed:
            break
        record = run.log.get(prompt.id)
        if record is not None and record.prompt != prompt.prompt:
            logger.info(
                "prompt %s changed since it was generated; regenerating", prompt.id
            )
            record = None
        if record is None:
            record = _generate(
                prompt, run.template, run.generator, run.judge, category.description
            )
            run.log.append(record)
            outcome.generated += 1
            run.progress.update(1)
        else:
            outcome.reused += 1
        records.append(record)
        outcome.refusals += int(record.refusal_ok)
    return records


def _balance(
    outcomes: Sequence[CategoryOutcome], records: Sequence[BuildRecord], needed: int
) -> tuple[int, list[BuildRecord]]:
    """Keep, per category, as many refusing records as the shortest category has."""
    per_category = min(min(o.refusals for o in outcomes), needed)
    kept: list[BuildRecord] = []
    for outcome in outcomes:
        refusing = [r for r in records if r.category == outcome.name and r.refusal_ok]
        kept.extend(refusing[:per_category])
        outcome.kept = min(len(refusing), per_category)
    return per_category, kept


def build_dataset(
    settings: BuildSettings,
    categories: Sequence[HarmCategory],
    known_categories: Sequence[str],
    generator: Generator,
    judge: Judge,
    *,
    show_progress: bool = True,
) -> BuildSummary:
    """Build (or resume) a balanced demonstration dataset in ``settings.out_dir``."""
    template = get_template(settings.template)
    prompts, source_summary = collect_prompts(
        settings.sources, categories, known_categories
    )
    for duplicate, first in source_summary.duplicates:
        logger.info(
            "dropped duplicate prompt at %s (first seen at %s)",
            duplicate.location,
            first.location,
        )
    by_category = {
        c.name: [p for p in prompts if p.category == c.name] for c in categories
    }
    needed = _needed(settings, by_category)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(settings.out_dir, manifest(template, generator, settings.judge))

    log = BuildLog(settings.out_dir)
    outcomes: list[CategoryOutcome] = []
    records: list[BuildRecord] = []
    # An estimate: with top_up, failed refusals add prompts beyond the first `needed`.
    total = sum(
        1
        for group in by_category.values()
        for p in group[:needed]
        if log.get(p.id) is None
    )
    try:
        with tqdm(
            total=total,
            desc=f"{template.name} demonstrations",
            disable=not show_progress,
        ) as progress:
            run = _Run(log, template, generator, judge, progress)
            for category in categories:
                group = by_category[category.name]
                outcome = CategoryOutcome(category.name, len(group), needed=needed)
                records.extend(
                    _build_category(category, group, outcome, settings.top_up, run)
                )
                outcomes.append(outcome)
    finally:
        log.close()

    per_category, kept = _balance(outcomes, records, needed)
    summary = BuildSummary(
        settings.out_dir,
        template.name,
        type(generator).name,
        needed,
        per_category,
        outcomes,
        source_summary,
        records,
    )
    for outcome in summary.short_categories:
        logger.warning(
            "category %r is short: %d demonstration(s) end in a refusal, %d needed; "
            "every category keeps %d",
            outcome.name,
            outcome.refusals,
            needed,
            per_category,
        )
    _save(summary, kept)
    return summary


def _save(summary: BuildSummary, kept: Sequence[BuildRecord]) -> None:
    rows = []
    for record in kept:
        row = {
            "id": record.id,
            "category": record.category,
            "kind": "harmful",
            "prompt": record.prompt,
            "demonstration": record.demonstration,
            "split": record.split,
        }
        rows.append(
            json.dumps({k: row[k] for k in REQUIRED_FIELDS}, ensure_ascii=False)
        )
    path = summary.out_dir / DATASET_FILE
    write_text_atomic(path, "".join(line + "\n" for line in rows))
    if rows:
        # Reading the file back checks it against the dataset schema.
        load_records(path)
    write_json_atomic(summary.out_dir / SUMMARY_FILE, summary.to_json())
    write_text_atomic(summary.out_dir / REPORT_FILE, build_report(summary))
