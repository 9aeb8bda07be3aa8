"""Markdown reports of data builds: one build's counts, and a CoD-vs-CoT comparison."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from drirl.data_build_log import RECORDS_FILE, BuildRecord, read_build_records
from drirl.errors import DrirlError

if TYPE_CHECKING:
    from drirl.data_build import BuildSummary

MANIFEST_FILE = "build.json"


@dataclass(frozen=True)
class CostStats:
    """Token and time statistics over a set of build records."""

    n: int
    tokens_mean: float
    tokens_median: float
    seconds_mean: float
    seconds_total: float
    refusals: int

    @property
    def refusal_share(self) -> float:
        """Return the fraction of records whose final answer is a refusal."""
        return self.refusals / self.n if self.n else 0.0


def cost_stats(records: Sequence[BuildRecord]) -> CostStats:
    """Return token and time statistics of ``records`` (zeros when there are none)."""
    if not records:
        return CostStats(0, 0.0, 0.0, 0.0, 0.0, 0)
    tokens = [r.tokens for r in records]
    seconds = [r.seconds for r in records]
    return CostStats(
        n=len(records),
        tokens_mean=statistics.fmean(tokens),
        tokens_median=float(statistics.median(tokens)),
        seconds_mean=statistics.fmean(seconds),
        seconds_total=sum(seconds),
        refusals=sum(r.refusal_ok for r in records),
    )


def _cost_row(label: str, stats: CostStats) -> str:
    return (
        f"| {label} | {stats.n} | {stats.tokens_mean:.1f} | {stats.tokens_median:.1f} | "
        f"{stats.seconds_mean:.2f} | {stats.seconds_total:.1f} | "
        f"{stats.refusal_share:.0%} ({stats.refusals}/{stats.n}) |"
    )


COST_HEADER = (
    "| template | demonstrations | tokens mean | tokens median | seconds mean | "
    "seconds total | ends in a refusal |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def build_report(summary: BuildSummary) -> str:
    """Return report.md of one build: counts per category, shortfalls, cost."""
    lines = [
        f"# Data build: {summary.template} demonstrations",
        "",
        f"Generator: `{summary.generator}`. Needed per category: {summary.needed}. "
        f"Kept per category: {summary.per_category}.",
        "",
        "| category | prompts | generated | reused | ends in a refusal | kept | needed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    for c in summary.categories:
        lines.append(
            f"| {c.name} | {c.candidates} | {c.generated} | {c.reused} | "
            f"{c.refusals} | {c.kept} | {c.needed} |"
        )

    lines += ["", "## Short categories", ""]
    if summary.short_categories:
        lines.append(
            "These categories have fewer demonstrations that end in a refusal than "
            f"needed, so every category keeps {summary.per_category}. Nothing was padded."
        )
        lines.append("")
        for c in summary.short_categories:
            lines.append(f"- {c.name}: {c.refusals} of {c.needed} needed")
    else:
        lines.append("None: every category has the needed number of refusals.")

    sources = summary.sources
    lines += ["", "## Sources", ""]
    for source, count in sources.read.items():
        lines.append(f"- `{source}`: {count} harmful prompt(s)")
    lines.append(f"- duplicate prompts dropped: {len(sources.duplicates)}")
    for duplicate, first in sources.duplicates:
        lines.append(f"  - {duplicate.location} repeats {first.location}")
    lines.append(f"- benign rows skipped: {sources.skipped_benign}")
    lines.append(
        f"- rows of unselected categories skipped: {sources.skipped_other_category}"
    )

    lines += ["", "## Cost", "", COST_HEADER]
    lines.append(_cost_row(summary.template, cost_stats(summary.records)))
    return "\n".join(lines) + "\n"


def _load_build(folder: Path) -> tuple[str, list[BuildRecord]]:
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DrirlError(
            f"{folder} is not a data build folder ({MANIFEST_FILE} is missing); give a "
            "folder written by `drirl data build --out`"
        )
    template = json.loads(manifest_path.read_text(encoding="utf-8"))["template"]
    return template, read_build_records(folder / RECORDS_FILE)


def compare_builds(folders: Sequence[Path]) -> str:
    """Return a Markdown table comparing builds on the prompts that all of them generated."""
    if len(folders) < 2:
        raise DrirlError("compare needs at least two build folders")
    builds = [_load_build(Path(f)) for f in folders]
    latest = [{r.id: r for r in records} for _, records in builds]
    common = set(latest[0]).intersection(*latest[1:])
    lines = [
        "# Demonstration templates compared",
        "",
        f"On the {len(common)} prompt(s) that every build generated.",
        "",
        COST_HEADER,
    ]
    for (template, _), by_id in zip(builds, latest, strict=True):
        chosen = [by_id[i] for i in sorted(common)]
        lines.append(_cost_row(template, cost_stats(chosen)))
    lines += [
        "",
        "Tokens are generated tokens per demonstration. Seconds are the wall time of "
        "each generator call. A demonstration ends in a refusal when the refusal judge "
        "labels its final answer, after the reasoning, a refusal.",
    ]
    return "\n".join(lines) + "\n"
