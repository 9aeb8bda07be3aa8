import json

import pytest

from drirl.components import RunContext
from drirl.lm_eval_runner import build_choice_task_config
from drirl.plugins.benchmarks.mc_qa import (
    McQa,
    McQaSettings,
    questions_path,
    read_questions,
)


def test_questions_file_shape():
    questions = read_questions(questions_path())
    assert len(questions) >= 40
    assert len({q["id"] for q in questions}) == len(questions)
    for question in questions:
        assert len(question["choices"]) == 4, question["id"]
        assert len(set(question["choices"])) == 4, question["id"]
        assert question["answer"] in (0, 1, 2, 3), question["id"]


def test_answers_spread_over_positions():
    answers = [q["answer"] for q in read_questions(questions_path())]
    # A model that always picks one position scores no more than a third.
    assert max(answers.count(i) for i in range(4)) <= len(answers) / 3


def test_choice_config_is_multiple_choice(tmp_path):
    config = build_choice_task_config("t", tmp_path / "q.jsonl", cache_dir=tmp_path)
    assert config["output_type"] == "multiple_choice"
    assert config["doc_to_choice"] == "{{choices}}"
    assert config["doc_to_target"] == "{{answer}}"


def test_settings_rejects_bad_limit():
    with pytest.raises(ValueError, match="limit"):
        McQaSettings(limit=0)


@pytest.mark.slow
def test_mc_qa_embedded(tmp_path, embedded_policy):
    questions = read_questions(questions_path())
    metrics = McQa().run(embedded_policy, [], None, tmp_path, RunContext())
    accuracy = metrics["mc_qa/accuracy"]
    assert set(metrics) == {"mc_qa/accuracy"}
    assert accuracy.n == len(questions)
    assert 0.0 <= accuracy.ci_low <= accuracy.value <= accuracy.ci_high <= 1.0

    rows = [
        json.loads(line)
        for line in (tmp_path / "samples.jsonl").read_text().splitlines()
    ]
    assert [row["id"] for row in rows] == [q["id"] for q in questions]
    assert all(len(row["loglikelihoods"]) == 4 for row in rows)
    # Recompute lm-eval's accuracy from its per-choice log-likelihoods.
    recomputed = [
        max(range(4), key=row["loglikelihoods"].__getitem__) == row["answer"]
        for row in rows
    ]
    assert [row["correct"] for row in rows] == recomputed
    assert accuracy.value == pytest.approx(sum(recomputed) / len(rows))
    # The embedded SmolLM2-135M-Instruct scored 25 of 48 (0.52) when this was written.
    assert accuracy.value > 0.25


@pytest.mark.slow
def test_mc_qa_limit(tmp_path, embedded_policy):
    metrics = McQa(McQaSettings(limit=5)).run(
        embedded_policy, [], None, tmp_path, RunContext()
    )
    assert metrics["mc_qa/accuracy"].n == 5
