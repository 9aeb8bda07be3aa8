"""Training curves in numbers: a logged value averaged over each quarter of training.

The refusal monitors of ``grpo`` and ``grpo_s`` log, per step, the fraction of sampled
completions to harmful prompts that refuse and to benign prompts that answer. Averaged by
quarter of the run, they show in report.md which optimizer refuses sooner, beside the
plotted curves in training_curves.png.
"""

from __future__ import annotations

import math
from typing import Any

# Curve name in the report: (log key, header).
CURVES = {
    "refusal_harmful": (
        "rewards/refusal_harmful/mean",
        "sampled harmful completions refused",
    ),
    "answer_benign": ("rewards/answer_benign/mean", "sampled benign completions answered"),
}
PARTS = 4


def part_means(values: list[float | None], parts: int = PARTS) -> list[float | None]:
    """Split ``values`` (one per step, in order) into ``parts`` runs and average each.

    A missing value (None or NaN) comes from a step without prompts of the monitored kind,
    so it is left out of its part's mean. A part with no value left is None. Fewer steps
    than parts give one part per step.
    """
    count = len(values)
    parts = min(parts, count)
    means: list[float | None] = []
    for index in range(parts):
        chunk = values[index * count // parts : (index + 1) * count // parts]
        present = [v for v in chunk if v is not None and not math.isnan(v)]
        means.append(sum(present) / len(present) if present else None)
    return means


def curve_summary(history: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Return each monitored curve of a training log as its quarter means."""
    steps = [row for row in history if "step" in row and "loss" in row]
    summary = {}
    for name, (key, _) in CURVES.items():
        values = [row.get(key) for row in steps if key in row]
        if values:
            summary[name] = part_means(values)
    return summary


def _cell_curves(cell: dict[str, Any]) -> dict[str, list[float | None]]:
    return (cell.get("training") or {}).get("curves") or {}


def curves_section(cells: list[dict[str, Any]]) -> list[str]:
    """Return report.md's section of quarter means, or nothing when no cell logged curves."""
    with_curves = [cell for cell in cells if _cell_curves(cell)]
    if not with_curves:
        return []
    lines = [
        "",
        "## Refusal during training",
        "",
        "Mean over each quarter of the training steps, on the policy's own samples of the "
        "training prompts (judged by refusal_phrases); the evaluation above uses the eval "
        "split.",
    ]
    for name, (_, header) in CURVES.items():
        rows = [(cell["id"], _cell_curves(cell).get(name)) for cell in with_curves]
        rows = [(cell_id, means) for cell_id, means in rows if means]
        if not rows:
            continue
        width = max(len(means) for _, means in rows)
        lines += [
            "",
            f"{header[0].upper()}{header[1:]}:",
            "",
            "| cell | " + " | ".join(f"part {i + 1} of {width}" for i in range(width)) + " |",
            "|---|" + "---|" * width,
        ]
        for cell_id, means in rows:
            formatted = ["-" if m is None else f"{m:.2f}" for m in means]
            lines.append(f"| {cell_id} | " + " | ".join(formatted) + " |")
    return lines
