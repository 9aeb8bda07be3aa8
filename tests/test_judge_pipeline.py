"""Tests of how the evaluate stage runs a judge: prepare, per-response failures, judge.json
and the judge notes of the report.

The benchmark here is a stub that judges fixed responses, so no model generates anything;
the judge and the pipeline code are real.
"""

from __future__ import annotations

import json

import pytest
import torch

from drirl.components import (
    Benchmark,
    Judge,
    Judgement,
    Metric,
    Optimizer,
    RewardLearner,
    TrainResult,
)
from drirl.config import load_experiment
from drirl.pipeline import JUDGE_REPORT, ExperimentRunner
from drirl.plugin_manager import load_plugins
from drirl.report import markdown_report, results_document


class RecordingJudge(Judge):
    """Raises on the response "boom" and remembers what ``prepare`` received."""

    name = "recording"
    prepared = []

    def prepare(self, run):
        type(self).prepared.append(run)

    def judge(self, prompts, responses):
        if "boom" in responses:
            raise RuntimeError("judge model crashed")
        return [Judgement("refusal", 1.0) for _ in responses]

    def report(self):
        return {"independent": False}


class StubBenchmark(Benchmark):
    """Judges "boom" for the first eval record and "fine" for the others."""

    name = "stub_judged"
    labels = []

    def run(self, model_path, records, judge, out_dir, ctx):
        responses = ["boom"] + ["fine"] * (len(records) - 1)
        judgements = judge.judge([r.prompt for r in records], responses)
        type(self).labels = [j.label for j in judgements]
        hits = sum(j.label == "refusal" for j in judgements)
        return {"stub/all": Metric(hits / len(judgements), len(judgements))}


def run_stub_cell(judge_class, name, eval_per_category, out):
    """Run one untrained cell that evaluates ``StubBenchmark`` with ``judge_class``."""
    plugins = load_plugins(use_entry_points=False)
    plugins.registry("judge").add(judge_class, plugin="tests", version="0")
    plugins.registry("benchmark").add(StubBenchmark, plugin="tests", version="0")
    experiment = load_experiment(
        {
            "name": name,
            "categories": ["insult"],
            "data": {"eval_per_category": eval_per_category},
            "optimizer": "none",
            "evaluation": {"judge": judge_class.name, "benchmarks": ["stub_judged"]},
        },
        plugins,
    )
    (result,) = ExperimentRunner(experiment, plugins, out, show_progress=False).run()
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("judge_hook")
    return out, run_stub_cell(RecordingJudge, "judge-hook", 2, out)


def test_other_judgements_kept(run):
    assert StubBenchmark.labels[0] == "error"
    assert set(StubBenchmark.labels[1:]) == {"refusal"}


def test_prepare_receives_eval_records(run):
    records = RecordingJudge.prepared[-1].records
    assert records
    assert {r.split for r in records} == {"eval"}


def test_prepare_without_reward_stage(run):
    assert RecordingJudge.prepared[-1].reward_dir is None


def test_judge_report_stored_in_stage(run):
    out, result = run
    folder = out / result.stages["evaluate/stub_judged"]
    stored = json.loads((folder / JUDGE_REPORT).read_text(encoding="utf-8"))
    assert stored["errors"] == 1
    assert stored["judged"] == len(StubBenchmark.labels)


def test_cell_result_carries_judge_report(run):
    _, result = run
    assert result.judge["stub_judged"]["judge"] == "recording"
    assert result.judge["stub_judged"]["independent"] is False


def test_report_shows_judge_notes(run):
    _, result = run
    text = markdown_report(results_document("judge-hook", None, [result]))
    assert "**Not independent**" in text
    assert "could not rate 1 of" in text


class StubLearner(RewardLearner):
    """Writes a marker file in place of reward models."""

    name = "stub_learner"

    def train(self, policy_path, records, out_dir, ctx):
        (out_dir / "marker.txt").write_text("reward", encoding="utf-8")

    def load(self, out_dir, ctx):
        return ZeroScorer()


class ZeroScorer:
    def score(self, prompts, responses, categories):
        return torch.zeros(len(prompts))


class StubOptimizer(Optimizer):
    """Trains nothing; it needs a reward stage so the cell has one."""

    name = "stub_optimizer"

    def train(self, policy_path, records, scorer, scaler, out_dir, ctx):
        (out_dir / "model").mkdir()
        return TrainResult(out_dir / "model")


def test_prepare_gets_policy_reward_dir(tmp_path):
    plugins = load_plugins(use_entry_points=False)
    plugins.registry("judge").add(RecordingJudge, plugin="tests", version="0")
    plugins.registry("benchmark").add(StubBenchmark, plugin="tests", version="0")
    plugins.registry("reward_learner").add(StubLearner, plugin="tests", version="0")
    plugins.registry("optimizer").add(StubOptimizer, plugin="tests", version="0")
    experiment = load_experiment(
        {
            "name": "judge-reward",
            "categories": ["insult"],
            "data": {"train_per_category": 1, "eval_per_category": 1},
            "reward": {"learner": "stub_learner"},
            "optimizer": "stub_optimizer",
            "evaluation": {"judge": "recording", "benchmarks": ["stub_judged"]},
        },
        plugins,
    )
    (result,) = ExperimentRunner(
        experiment, plugins, tmp_path, show_progress=False
    ).run()
    reward_dir = RecordingJudge.prepared[-1].reward_dir
    assert reward_dir == tmp_path / result.stages["reward"]
    assert (reward_dir / "marker.txt").is_file()


class VersionedJudge(RecordingJudge):
    """A judge whose ``fingerprint`` changes with its class attribute ``version``."""

    name = "versioned"
    version = "1"

    def fingerprint(self):
        return f"features-{type(self).version}"


def _evaluate_folder(out):
    result = run_stub_cell(VersionedJudge, "judge-version", 1, out)
    return result.stages["evaluate/stub_judged"]


def test_judge_fingerprint_keys_evaluation(tmp_path, monkeypatch):
    first = _evaluate_folder(tmp_path)
    assert _evaluate_folder(tmp_path) == first
    monkeypatch.setattr(VersionedJudge, "version", "2")
    assert _evaluate_folder(tmp_path) != first


@pytest.mark.parametrize(
    "name",
    [
        "refusal_phrases",
        "embedding_classifier",
        "reward_model",
        "llamaguard",
        "strongreject",
    ],
)
def test_judge_registered(name):
    assert name in load_plugins(use_entry_points=False).registry("judge")
