"""The comparison report of a run: results.json, results.csv and report.md in <run>/report/."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drirl.atomic import write_json_atomic, write_text_atomic
from drirl.checkpoint_curves import checkpoint_section
from drirl.errors import DrirlError
from drirl.plots import write_plots
from drirl.training_curves import curves_section

logger = logging.getLogger(__name__)

PAUSE_ENV = "DRIRL_TEST_PAUSE_AT"
# Metrics where a higher value is better; every built-in rate is oriented that way.
SUMMARY_METRICS = ("harmful_refusal/all", "benign_compliance/all")
# Summary columns shown when at least one cell has the metric, with their headers.
OPTIONAL_SUMMARY = {
    "jailbreak_refusal/all": "jailbreak refusal",
    "mc_qa/accuracy": "mc_qa accuracy",
    "helpfulness/answer_rate": "helpfulness answer rate",
    "helpfulness/quality": "helpfulness quality",
}
# Metric families with one table each: prefix and title.
FAMILIES = (
    ("harmful_refusal", "Refusal rate on harmful prompts, per category"),
    ("benign_compliance", "Compliance rate on benign look-alike prompts, per category"),
    (
        "jailbreak_refusal",
        "Refusal rate on jailbreak-wrapped harmful prompts, per template",
    ),
)
# Metrics of the reward stage, shown in their own section of report.md.
REWARD_MODEL_METRICS = ("reward_accuracy/", "routing_accuracy")


def results_document(
    name: str, file: str | None, cells: Sequence[Any]
) -> dict[str, Any]:
    """Build the JSON document with every number of the run."""
    return {
        "experiment": name,
        "file": file,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": [
            {
                "id": cell.id,
                "settings": cell.settings,
                "metrics": {k: asdict(m) for k, m in sorted(cell.metrics.items())},
                "training": cell.training,
                "stages": cell.stages,
                "seconds": round(cell.seconds, 1),
                "judge": getattr(cell, "judge", {}),
            }
            for cell in cells
        ],
    }


def _format(metric: dict[str, Any] | None, best: bool) -> str:
    if metric is None:
        return "-"
    text = f"{metric['value']:.2f}"
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        text += f" [{metric['ci_low']:.2f}, {metric['ci_high']:.2f}]"
    text += f" (n={metric['n']})"
    return f"**{text}**" if best else text


def _table(cells: list[dict[str, Any]], columns: list[str], header: list[str]) -> str:
    best: dict[str, float] = {}
    for column in columns:
        values = [
            c["metrics"][column]["value"] for c in cells if column in c["metrics"]
        ]
        if len(values) > 1:
            best[column] = max(values)
    lines = ["| cell | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    for cell in cells:
        row = [
            _format(
                cell["metrics"].get(column),
                cell["metrics"].get(column, {}).get("value") == best.get(column),
            )
            for column in columns
        ]
        lines.append(f"| {cell['id']} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _categories(cells: list[dict[str, Any]], prefix: str) -> list[str]:
    names = {
        name.split("/", 1)[1]
        for cell in cells
        for name in cell["metrics"]
        if name.startswith(prefix + "/") and not name.endswith("/all")
    }
    return sorted(names)


def judge_notes(cells: list[dict[str, Any]]) -> list[str]:
    """Return report lines on judges that failed on responses or were not independent."""
    lines = []
    for cell in cells:
        for benchmark, facts in sorted((cell.get("judge") or {}).items()):
            name = facts.get("judge", "judge")
            if facts.get("independent") is False:
                lines.append(
                    f"- **Not independent**: `{cell['id']}` {benchmark}: {name} used the "
                    "reward models the policy was trained against, so these rates are not "
                    "an independent measure."
                )
            if facts.get("errors"):
                lines.append(
                    f"- `{cell['id']}` {benchmark}: {name} could not rate "
                    f"{facts['errors']} of {facts.get('judged', '?')} responses (label "
                    '"error").'
                )
            if "heldout_accuracy" in facts:
                lines.append(
                    f"- `{cell['id']}` {benchmark}: {name} held-out accuracy "
                    f"{facts['heldout_accuracy']:.2f} (n={facts.get('heldout_n', '?')})."
                )
    return ["", "## Judge notes", "", *lines] if lines else []


def reward_model_section(cells: list[dict[str, Any]]) -> list[str]:
    """Return the report lines of the reward models' held-out pairwise accuracy, if any.

    A pair is correct when the chosen response (a demonstration beside a base-model sample,
    or a compliant answer beside a refusal) gets the higher reward.
    """
    trained = [
        cell
        for cell in cells
        if any(name.startswith(REWARD_MODEL_METRICS) for name in cell["metrics"])
    ]
    if not trained:
        return []
    kinds = ("harmful", "benign")
    style = {
        "harmful_vs_answer": "refusal vs answer",
        "benign_vs_drafted_refusal": "answer vs drafted refusal",
    }
    categories = [
        c for c in _categories(trained, "reward_accuracy") if c not in (*kinds, *style)
    ]
    columns = [f"reward_accuracy/{c}" for c in (*categories, *kinds, "all")]
    header = [*categories, "harmful pairs", "benign pairs", "all pairs"]
    for name, title in style.items():
        if any(f"reward_accuracy/{name}" in cell["metrics"] for cell in trained):
            columns.append(f"reward_accuracy/{name}")
            header.append(title)
    if any("routing_accuracy" in cell["metrics"] for cell in trained):
        columns.append("routing_accuracy")
        header.append("routing")
    return [
        "",
        "## Reward models: pairwise accuracy on held-out pairs",
        "",
        "Eval-split pairs: each harmful prompt's demonstration against a base-model "
        "sample, and each benign prompt's compliant answer against a refusal. "
        "\"Refusal vs answer\" puts each harmful prompt's demonstration against a benign "
        "look-alike's answer, and \"answer vs drafted refusal\" each benign prompt's "
        "answer against a whole harmful demonstration. Both sides are written by the "
        "project, so a model that fails these pairs rewards the writing style rather "
        "than refusing or answering. Routing is the nearest-centroid router's accuracy "
        "on the eval prompts.",
        "",
        _table(trained, columns, header),
    ]


def _summary_table(cells: list[dict[str, Any]]) -> str:
    columns = list(SUMMARY_METRICS)
    header = ["harmful refusal", "benign compliance"]
    for name, title in OPTIONAL_SUMMARY.items():
        if any(name in cell["metrics"] for cell in cells):
            columns.append(name)
            header.append(title)
    return _table(cells, columns, header)


def markdown_report(document: dict[str, Any]) -> str:
    """Render the Markdown report: a summary table and one table per metric family."""
    cells = document["cells"]
    parts = [
        f"# {document['experiment']}",
        "",
        "Rates with a bootstrap 95% confidence interval and the sample count; "
        "the best value of each column is in bold.",
        "",
        "## Summary",
        "",
        _summary_table(cells),
    ]
    for prefix, title in FAMILIES:
        categories = _categories(cells, prefix)
        if categories:
            columns = [f"{prefix}/{c}" for c in categories]
            parts += ["", f"## {title}", "", _table(cells, columns, categories)]
    shown = (*(f"{prefix}/" for prefix, _ in FAMILIES), *OPTIONAL_SUMMARY)
    other = sorted(
        {
            name
            for cell in cells
            for name in cell["metrics"]
            if not name.startswith(shown) and not name.startswith(REWARD_MODEL_METRICS)
        }
    )
    parts += curves_section(cells)
    parts += checkpoint_section(cells)
    parts += reward_model_section(cells)
    if other:
        parts += ["", "## Other metrics", "", _table(cells, other, other)]
    parts += judge_notes(cells)
    parts += ["", "## Cells", ""]
    for cell in cells:
        settings = (
            ", ".join(f"{k}={v}" for k, v in cell["settings"].items()) or "defaults"
        )
        training = cell.get("training") or {}
        extra = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in training.items()
            if k not in ("curves", "checkpoints")  # shown in their own sections
        )
        parts.append(
            f"- `{cell['id']}`: {settings}; {cell['seconds']:.0f}s"
            + (f"; training: {extra}" if extra else "")
        )
    return "\n".join(parts) + "\n"


def csv_report(document: dict[str, Any]) -> str:
    """Render every metric of every cell as one CSV row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cell", "metric", "value", "n", "ci_low", "ci_high"])
    for cell in document["cells"]:
        for name, metric in cell["metrics"].items():
            writer.writerow(
                [
                    cell["id"],
                    name,
                    metric["value"],
                    metric["n"],
                    metric.get("ci_low"),
                    metric.get("ci_high"),
                ]
            )
    return out.getvalue()


def _pause_for_tests(point: str) -> None:
    # Test-only hook: with DRIRL_TEST_PAUSE_AT=report, write_report sleeps for
    # DRIRL_TEST_PAUSE_SECONDS (default 30) after results.json, so that a test can kill the
    # process while the report is half written. Nothing else reads these variables.
    if os.environ.get(PAUSE_ENV) == point:
        seconds = float(os.environ.get("DRIRL_TEST_PAUSE_SECONDS", "30"))
        logger.info("%s=%s: pausing %.0f s", PAUSE_ENV, point, seconds)
        time.sleep(seconds)


def write_report(run_dir: Path, document: dict[str, Any]) -> Path:
    """Write results.json, results.csv, the PNG plots and report.md; return the folder."""
    folder = run_dir / "report"
    write_json_atomic(folder / "results.json", document)
    _pause_for_tests("report")
    write_text_atomic(folder / "results.csv", csv_report(document))
    plots = write_plots(run_dir, document)
    text = markdown_report(document)
    if plots:
        text += "\n## Plots\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    write_text_atomic(folder / "report.md", text)
    return folder


def rebuild_report(run_dir: Path) -> Path:
    """Rebuild the report files from a run's results.json, or from its finished cells.

    A run stopped before its report was written still has ``cells/<id>.json`` for each
    finished cell, so the report of those cells can be built from them.
    """
    path = run_dir / "report" / "results.json"
    if path.is_file():
        document = json.loads(path.read_text(encoding="utf-8"))
        return write_report(run_dir, document)
    cells = sorted((run_dir / "cells").glob("*.json"))
    if not cells:
        raise DrirlError(
            f"{path} not found and {run_dir / 'cells'} has no finished cell; give the "
            "folder passed to `drirl run --out`, after a run has finished at least one cell"
        )
    logger.warning(
        "%s not found; building the report from %d finished cell(s) in %s",
        path,
        len(cells),
        run_dir / "cells",
    )
    document = {
        "experiment": run_dir.name,
        "file": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cells": [json.loads(cell.read_text(encoding="utf-8")) for cell in cells],
    }
    return write_report(run_dir, document)
