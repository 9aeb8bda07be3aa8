import json

import pytest

from drirl.config import load_experiment
from drirl.pipeline import ExperimentRunner


@pytest.mark.slow
def test_evaluate_stage_keeps_samples(tmp_path, plugins, embedded_policy):
    prompts = tmp_path / "benign.csv"
    prompts.write_text("q\nHow do I boil an egg?\nName a color.\n", encoding="utf-8")
    raw = {
        "optimizer": "none",
        "categories": ["insult"],
        "evaluation": {
            "settings": {"max_new_tokens": 8},
            "benchmarks": [
                {"mc_qa": {"limit": 3}},
                {
                    "user_file": {
                        "path": str(prompts),
                        "prompt_column": "q",
                        "expect": "answer",
                    }
                },
            ],
        },
    }
    experiment = load_experiment(raw, plugins, file=tmp_path / "exp.yaml")
    runner = ExperimentRunner(
        experiment, plugins, tmp_path / "run", show_progress=False
    )
    (result,) = runner.run()

    assert result.metrics["mc_qa/accuracy"].n == 3
    assert result.metrics["benign_answer/all"].n == 2
    assert set(result.stages) == {"evaluate/mc_qa", "evaluate/user_file:benign"}
    for label, count in (("evaluate/mc_qa", 3), ("evaluate/user_file:benign", 2)):
        folder = tmp_path / "run" / result.stages[label]
        assert (folder / "metrics.json").is_file()
        lines = (folder / "samples.jsonl").read_text().splitlines()
        assert len(lines) == count
    user_rows = [
        json.loads(line)
        for line in (
            tmp_path
            / "run"
            / result.stages["evaluate/user_file:benign"]
            / "samples.jsonl"
        )
        .read_text()
        .splitlines()
    ]
    assert [row["prompt"] for row in user_rows] == [
        "How do I boil an egg?",
        "Name a color.",
    ]
    assert all("response" in row and "label" in row for row in user_rows)

    # An edited file changes the stage key, so the benchmark runs again on the new prompts.
    prompts.write_text("q\nHow do I boil an egg?\n", encoding="utf-8")
    experiment = load_experiment(raw, plugins, file=tmp_path / "exp.yaml")
    runner = ExperimentRunner(
        experiment, plugins, tmp_path / "run", show_progress=False
    )
    (rerun,) = runner.run()
    assert rerun.metrics["benign_answer/all"].n == 1
    assert rerun.stages["evaluate/mc_qa"] == result.stages["evaluate/mc_qa"]
