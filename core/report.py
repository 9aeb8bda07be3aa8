"""The comparison report of a run: results.json, results.csv and report.md in <run>/report/."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from drirl.atomic import write_json_atomic, write_text_atomic
from drirl.errors import DrirlError
from drirl.plots import write_plots

# Metrics where a higher value is better; every built-in rate is oriented that way.
SUMMARY_METRICS = ("harmful_refusal/all", "benign_compliance/all")


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
        _table(cells, list(SUMMARY_METRICS), ["harmful refusal", "benign compliance"]),
    ]
    for prefix, title in (
        ("harmful_refusal", "Refusal rate on harmful prompts, per category"),
        (
            "benign_compliance",
            "Compliance rate on benign look-alike prompts, per category",
        ),
    ):
        categories = _categories(cells, prefix)
        if categories:
            columns = [f"{prefix}/{c}" for c in categories]
            parts += ["", f"## {title}", "", _table(cells, columns, categories)]
    other = sorted(
        {
            name
            for cell in cells
            for name in cell["metrics"]
            if not name.startswith(("harmful_refusal/", "benign_compliance/"))
        }
    )
    if other:
        parts += ["", "## Other metrics", "", _table(cells, other, other)]
    parts += ["", "## Cells", ""]
    for cell in cells:
        settings = (
            ", ".join(f"{k}={v}" for k, v in cell["settings"].items()) or "defaults"
        )
        training = cell.get("training") or {}
        extra = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in training.items()
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


def write_report(run_dir: Path, document: dict[str, Any]) -> Path:
    """Write results.json, results.csv, the PNG plots and report.md; return the folder."""
    folder = run_dir / "report"
    write_json_atomic(folder / "results.json", document)
    write_text_atomic(folder / "results.csv", csv_report(document))
    plots = write_plots(run_dir, document)
    text = markdown_report(document)
    if plots:
        text += "\n## Plots\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    write_text_atomic(folder / "report.md", text)
    return folder


def rebuild_report(run_dir: Path) -> Path:
    """Rebuild the report files from a run's saved results.json."""
    path = run_dir / "report" / "results.json"
    if not path.is_file():
        raise DrirlError(
            f"{path} not found; give the folder passed to `drirl run --out`, after a run "
            "has finished at least one cell"
        )
    document = json.loads(path.read_text(encoding="utf-8"))
    return write_report(run_dir, document)
