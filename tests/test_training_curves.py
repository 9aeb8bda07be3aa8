"""Quarter means of the refusal monitors' curves, and their section in report.md."""

from __future__ import annotations

import math

from drirl.pipeline import training_summary
from drirl.training_curves import curves_section, part_means


def test_part_means_by_hand():
    values = [0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert part_means(values) == [0.25, 0.75, 1.0, 0.5]


def test_part_means_skip_missing_values():
    assert part_means([None, 1.0, math.nan, None, 0.0, 0.5, 1.0, 1.0]) == [
        1.0,
        None,
        0.25,
        1.0,
    ]


def test_part_means_fewer_steps_than_parts():
    assert part_means([0.2, 0.4]) == [0.2, 0.4]


def history(values):
    return [
        {"step": i + 1, "loss": 0.1, "rewards/refusal_harmful/mean": v}
        for i, v in enumerate(values)
    ] + [{"step": len(values), "train_runtime": 3.0}]


def test_training_summary_keeps_curves():
    summary = training_summary(history([0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]))
    assert summary["curves"] == {"refusal_harmful": [0.0, 0.5, 1.0, 1.0]}
    assert "answer_benign" not in summary["curves"]


def test_curves_section_table():
    cells = [
        {"id": "grpo", "training": {"curves": {"refusal_harmful": [0.1, 0.2, 0.3, 0.4]}}},
        {"id": "grpo_s", "training": {"curves": {"refusal_harmful": [0.2, None, 0.6, 0.8]}}},
        {"id": "base", "training": {}},
    ]
    text = "\n".join(curves_section(cells))
    assert "| grpo | 0.10 | 0.20 | 0.30 | 0.40 |" in text
    assert "| grpo_s | 0.20 | - | 0.60 | 0.80 |" in text
    assert "| base |" not in text
    assert "Sampled harmful completions refused:" in text


def test_no_section_without_curves():
    assert curves_section([{"id": "base", "training": {}}]) == []
