import json
from collections import Counter

import pytest

from drirl.components import Judgement, RunContext
from drirl.judged_benchmark import JudgedBenchmarkSettings
from drirl.plugins.benchmarks.helpfulness import (
    Helpfulness,
    instructions_path,
    load_instructions,
)
from drirl.plugins.judges.refusal_phrases import RefusalPhrasesJudge


def test_instructions_file():
    records = load_instructions(instructions_path())
    counts = Counter(r.category for r in records)
    assert len(records) >= 30
    assert set(counts) == {"writing", "coding", "math", "advice"}
    assert all(r.demonstration.strip() for r in records)
    assert len({r.id for r in records}) == len(records)


def test_limit_per_category():
    benchmark = Helpfulness(JudgedBenchmarkSettings(limit_per_category=2))
    records = benchmark.eval_records([])
    assert len(records) == 8
    assert Counter(r.category for r in records) == {
        "writing": 2,
        "coding": 2,
        "math": 2,
        "advice": 2,
    }


def test_quality_zero_for_refusal_and_empty():
    benchmark = Helpfulness()
    record = load_instructions(instructions_path())[16]
    assert record.prompt == "What is 15% of 200?"
    pairs = [
        (record, "15% of 200 is 30."),
        (record, "I can't help with that."),
        (record, ""),
    ]
    judgements = RefusalPhrasesJudge().judge(
        [r.prompt for r, _ in pairs], [text for _, text in pairs]
    )
    metrics, fields = benchmark.extra_metrics(pairs, judgements, RunContext())
    # The first response repeats the reference answer, so its similarity is 1.
    assert fields[0]["quality"] == pytest.approx(1.0, abs=1e-3)
    assert fields[1]["quality"] == 0.0
    assert fields[2]["quality"] == 0.0
    assert fields[1]["similarity"] < 0.9
    assert metrics["helpfulness/quality"].value == pytest.approx(1 / 3, abs=1e-3)
    assert metrics["helpfulness/quality"].n == 3


def test_quality_skips_unrated():
    benchmark = Helpfulness()
    record = load_instructions(instructions_path())[16]
    pairs = [(record, "15% of 200 is 30."), (record, "Thirty.")]
    judgements = [
        Judgement(label="compliant", score=0.0),
        Judgement(label="error", score=0.0),
    ]
    metrics, fields = benchmark.extra_metrics(pairs, judgements, RunContext())
    assert metrics["helpfulness/quality"].n == 1
    assert "quality" not in fields[1]


@pytest.mark.slow
def test_helpfulness_run(tmp_path, embedded_policy):
    settings = JudgedBenchmarkSettings(
        max_new_tokens=16, batch_size=4, limit_per_category=1
    )
    metrics = Helpfulness(settings).run(
        embedded_policy, [], RefusalPhrasesJudge(), tmp_path, RunContext()
    )
    assert set(metrics) == {"helpfulness/answer_rate", "helpfulness/quality"}
    assert metrics["helpfulness/answer_rate"].n == 4
    assert metrics["helpfulness/quality"].n == 4

    rows = [
        json.loads(line)
        for line in (tmp_path / "samples.jsonl").read_text().splitlines()
    ]
    assert [row["category"] for row in rows] == ["writing", "coding", "math", "advice"]
    answered = [row["label"] != "refusal" for row in rows]
    assert metrics["helpfulness/answer_rate"].value == sum(answered) / 4
    qualities = [row["quality"] for row in rows]
    assert all(0.0 <= q <= 1.0 for q in qualities)
    assert metrics["helpfulness/quality"].value == pytest.approx(
        sum(qualities) / 4, abs=1e-3
    )
