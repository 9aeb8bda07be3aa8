"""PNG plots of a run's report: per-category refusal, the safety/usefulness trade-off,
training curves and the eval-split rates of the policies saved during training.

Every plot reads only the results document (results.json) and the optimize stages' saved
``log_history.json``, so ``drirl report RUN_DIR`` redraws them from a finished run. A plot
whose data is missing (no trained cell, no per-category metric) is skipped, not drawn empty.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from drirl.atomic import write_bytes_atomic  # noqa: E402
from drirl.checkpoint_curves import CURVE_METRICS, checkpoint_rows  # noqa: E402

logger = logging.getLogger(__name__)

SAFETY_METRIC = "harmful_refusal/all"
# The first usefulness metric a cell has, in this order, is the x axis of the trade-off.
USEFULNESS_METRICS = (
    "benign_compliance/all",
    "helpfulness/answer_rate",
    "mc_qa/accuracy",
)
# Each panel: its title and the log keys that hold it, first match wins. GRPO-S logs
# frac_groups_zero_spread; TRL's plain GRPO logs the same quantity as frac_reward_zero_std.
CURVES = (
    ("mean reward", ("reward",)),
    ("KL to the reference", ("kl",)),
    ("alpha (mean, min-max band)", ("alpha/mean",)),
    (
        "groups with zero reward spread",
        ("frac_groups_zero_spread", "frac_reward_zero_std"),
    ),
    # The refusal monitors of grpo and grpo_s (plugins/optimizers/grpo_monitors.py).
    ("sampled harmful completions refused", ("rewards/refusal_harmful/mean",)),
    ("sampled benign completions answered", ("rewards/answer_benign/mean",)),
)
# Panels per row of the training-curve figure.
PANELS_PER_ROW = 3


def _save(figure: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _categories(cells: list[dict[str, Any]], prefix: str) -> list[str]:
    return sorted(
        {
            name.split("/", 1)[1]
            for cell in cells
            for name in cell["metrics"]
            if name.startswith(prefix + "/") and not name.endswith("/all")
        }
    )


def category_refusal_plot(document: dict[str, Any], path: Path) -> Path | None:
    """Plot the harmful-prompt refusal rate of each cell in each category as bars."""
    cells = document["cells"]
    categories = _categories(cells, "harmful_refusal")
    if not categories:
        return None
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(categories) + 2), 4))
    width = 0.8 / max(1, len(cells))
    for index, cell in enumerate(cells):
        values = [
            cell["metrics"].get(f"harmful_refusal/{c}", {}).get("value", 0.0)
            for c in categories
        ]
        positions = [i + index * width for i in range(len(categories))]
        axis.bar(positions, values, width=width, label=cell["id"])
    axis.set_xticks([i + width * (len(cells) - 1) / 2 for i in range(len(categories))])
    axis.set_xticklabels(categories, rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("refusal rate on harmful prompts")
    axis.legend(fontsize="small")
    axis.set_title(document.get("experiment", ""))
    return _save(figure, path)


def _usefulness_metric(cells: list[dict[str, Any]]) -> str | None:
    for name in USEFULNESS_METRICS:
        if all(name in cell["metrics"] for cell in cells):
            return name
    return None


def tradeoff_plot(document: dict[str, Any], path: Path) -> Path | None:
    """Plot safety (harmful refusal) against usefulness, with 95% CI whiskers."""
    cells = [c for c in document["cells"] if SAFETY_METRIC in c["metrics"]]
    usefulness = _usefulness_metric(cells) if cells else None
    if usefulness is None:
        return None
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for cell in cells:
        x, y = cell["metrics"][usefulness], cell["metrics"][SAFETY_METRIC]
        axis.errorbar(
            x["value"],
            y["value"],
            xerr=_whisker(x),
            yerr=_whisker(y),
            fmt="o",
            capsize=3,
            label=cell["id"],
        )
    axis.set_xlim(-0.05, 1.05)
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlabel(usefulness)
    axis.set_ylabel(SAFETY_METRIC)
    axis.set_title("safety against usefulness (top right is best)")
    axis.legend(fontsize="small")
    return _save(figure, path)


def _whisker(metric: dict[str, Any]) -> list[list[float]] | None:
    low, high = metric.get("ci_low"), metric.get("ci_high")
    if low is None or high is None:
        return None
    return [[max(0.0, metric["value"] - low)], [max(0.0, high - metric["value"])]]


def _histories(document: dict[str, Any], run_dir: Path) -> dict[str, list[dict]]:
    histories = {}
    for cell in document["cells"]:
        folder = cell.get("stages", {}).get("optimize")
        path = run_dir / folder / "log_history.json" if folder else None
        if path is None or not path.is_file():
            continue
        rows = json.loads(path.read_text(encoding="utf-8"))
        rows = [
            row for row in rows if "step" in row and ("reward" in row or "loss" in row)
        ]
        if rows:
            histories[cell["id"]] = rows
    return histories


def training_curves_plot(
    document: dict[str, Any], run_dir: Path, path: Path
) -> Path | None:
    """Plot reward, KL, alpha and zero-spread groups against the step, one panel each."""
    histories = _histories(document, run_dir)
    panels = [
        (title, keys)
        for title, keys in CURVES
        if any(
            key in row for rows in histories.values() for row in rows for key in keys
        )
    ]
    if not panels:
        return None
    columns = min(PANELS_PER_ROW, len(panels))
    rows_of_panels = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows_of_panels,
        columns,
        figsize=(4.2 * columns, 3.4 * rows_of_panels),
        squeeze=False,
    )
    flat_axes = list(axes.flat)
    for unused in flat_axes[len(panels) :]:
        unused.set_visible(False)
    colours = {cell_id: f"C{i}" for i, cell_id in enumerate(histories)}
    for axis, (title, keys) in zip(flat_axes, panels):
        for cell_id, rows in histories.items():
            key = next((k for k in keys if any(k in row for row in rows)), None)
            if key is None:
                continue
            # A monitor logs None (JSON null) for a step without prompts of its kind.
            logged = [row for row in rows if row.get(key) is not None]
            steps = [row["step"] for row in logged]
            axis.plot(
                steps,
                [row[key] for row in logged],
                marker=".",
                color=colours[cell_id],
                label=cell_id,
            )
            if key == "alpha/mean":
                low = [row.get("alpha/min", row[key]) for row in logged]
                high = [row.get("alpha/max", row[key]) for row in logged]
                axis.fill_between(steps, low, high, color=colours[cell_id], alpha=0.2)
        axis.set_title(title)
        axis.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    return _save(figure, path)


def checkpoint_plot(document: dict[str, Any], path: Path) -> Path | None:
    """Plot the saved policies' eval-split rates against the step, one panel each."""
    cells = [cell for cell in document["cells"] if checkpoint_rows(cell)]
    panels = [
        (name, title)
        for name, title in CURVE_METRICS.items()
        if any(name in row["metrics"] for c in cells for row in checkpoint_rows(c))
    ]
    if not panels:
        return None
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False
    )
    for axis, (name, title) in zip(axes[0], panels):
        for index, cell in enumerate(cells):
            rows = [
                row
                for row in checkpoint_rows(cell)
                if name in row["metrics"] and row["step"] is not None
            ]
            if not rows:
                continue
            steps = [row["step"] for row in rows]
            metrics = [row["metrics"][name] for row in rows]
            colour = f"C{index}"
            axis.plot(
                steps,
                [m["value"] for m in metrics],
                marker="o",
                color=colour,
                label=cell["id"],
            )
            if all(m.get("ci_low") is not None for m in metrics):
                axis.fill_between(
                    steps,
                    [m["ci_low"] for m in metrics],
                    [m["ci_high"] for m in metrics],
                    color=colour,
                    alpha=0.15,
                )
        axis.set_ylim(-0.05, 1.05)
        axis.set_title(f"{title} (eval split)")
        axis.set_xlabel("step")
    axes[0][0].legend(fontsize="small")
    return _save(figure, path)


def write_plots(run_dir: Path, document: dict[str, Any]) -> list[Path]:
    """Draw every plot the document has data for into ``<run>/report/``."""
    folder = run_dir / "report"
    written = [
        category_refusal_plot(document, folder / "category_refusal.png"),
        tradeoff_plot(document, folder / "safety_vs_usefulness.png"),
        training_curves_plot(document, run_dir, folder / "training_curves.png"),
        checkpoint_plot(document, folder / "checkpoint_curves.png"),
    ]
    paths = [path for path in written if path is not None]
    logger.info("plots written: %s", ", ".join(p.name for p in paths) or "none")
    return paths
