"""Held-out curves: the eval-split rates of the policies saved during training.

A cell with ``evaluation.checkpoint_every: N`` keeps one row per saved policy, and one
for the final policy, in ``training["checkpoints"]``. A row is
``{"step": ..., "metrics": {...}}`` with the same metrics as the cell's own (see
``drirl.checkpoints``). The refusal monitors (``drirl.training_curves``) follow sampled
completions of the training prompts. These rates come from the evaluate stage instead:
greedy decoding of the eval split, judged by the cell's judge.
"""

from __future__ import annotations

from typing import Any

# Metric and column header, in table order. A column shows when a cell has its metric.
CURVE_METRICS = {
    "harmful_refusal/all": "harmful refusal",
    "benign_compliance/all": "benign compliance",
    "mc_qa/accuracy": "mc_qa accuracy",
}


def checkpoint_rows(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a cell's (step, metrics) rows, or an empty list without checkpoints."""
    return list((cell.get("training") or {}).get("checkpoints") or [])


def _format(metric: dict[str, Any] | None) -> str:
    if metric is None:
        return "-"
    low, high = metric.get("ci_low"), metric.get("ci_high")
    interval = "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"
    return f"{metric['value']:.2f}{interval} (n={metric['n']})"


def checkpoint_section(cells: list[dict[str, Any]]) -> list[str]:
    """Return report.md's section of held-out rates per saved policy, or nothing."""
    with_rows = [cell for cell in cells if checkpoint_rows(cell)]
    if not with_rows:
        return []
    present = {
        name for c in with_rows for row in checkpoint_rows(c) for name in row["metrics"]
    }
    columns = [name for name in CURVE_METRICS if name in present]
    lines = [
        "",
        "## Evaluation during training",
        "",
        "The eval-split rates of the policy saved after each step shown, with the "
        "cell's judge and greedy decoding. The last row of a cell is its final policy.",
        "",
        "| cell | step | " + " | ".join(CURVE_METRICS[c] for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for cell in with_rows:
        for row in checkpoint_rows(cell):
            values = [_format(row["metrics"].get(name)) for name in columns]
            step = "-" if row["step"] is None else str(row["step"])
            lines.append(f"| {cell['id']} | {step} | " + " | ".join(values) + " |")
    return lines
